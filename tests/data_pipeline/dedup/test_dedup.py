"""End to end: planted families found, unrelated documents kept, identical output for any workers /
memory budget, incremental == one-shot, bad input, the CLI and the `minhash_dedup` stage."""

import json
from pathlib import Path

import numpy as np
import pytest
import zstandard

from data_pipeline.dedup.api import run_dedup
from data_pipeline.dedup.index import DedupConfig, DuplicateIdError
from data_pipeline.dedup.minhash import exact_jaccard, normalize, shingle_hashes
from data_pipeline.dedup.synthetic import generate

BAD_LINES = [
    '{"id": "empty", "text": ""}',
    '{"id": "one-word", "text": "word"}',
    '{"id": "punct", "text": "!!! ... ???"}',
    "{not json",
    '{"id": "cjk", "text": "中文字符测试"}',
]


def _write(path: Path, recs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    recs = [
        r for r, _ in generate(500, family_fraction=0.3, edit_rates=(0.0, 0.005, 0.01, 0.12), words=(60, 160), seed=3)
    ]
    _write(root / "a.jsonl", recs[:300])
    path = _write(root / "b.jsonl", recs[300:])
    with open(path, "a") as f:
        f.write("\n".join(BAD_LINES) + "\n")
    return root, recs


def _jaccard(a, b):
    return exact_jaccard(shingle_hashes(normalize(a), 5), shingle_hashes(normalize(b), 5))


def _dups(out: Path) -> dict:
    return {r["id"]: r["duplicate_of"] for r in map(json.loads, (out / "duplicates.jsonl").read_text().splitlines())}


def _kept(out: Path) -> list[str]:
    ids = []
    for p in sorted(out.glob("part-*.jsonl.zst")):
        text = zstandard.ZstdDecompressor().stream_reader(open(p, "rb")).read().decode()
        ids += [json.loads(line)["id"] for line in text.splitlines()]
    return ids


def test_planted_families_found_unrelated_kept(corpus, tmp_path):
    root, recs = corpus
    stats = run_dedup([str(root)], tmp_path / "out", DedupConfig(shard_docs=64))
    dups, kept = _dups(tmp_path / "out"), set(_kept(tmp_path / "out"))
    by_id = {r["id"]: r["text"] for r in recs}
    checked = {"near": 0, "far": 0}
    for doc_id, text in by_id.items():
        fam, _, v = doc_id.partition("-v")
        if not v or v == "0":
            assert doc_id not in dups and doc_id in kept  # bases and unrelated documents are kept
            continue
        j = _jaccard(by_id[f"{fam}-v0"], text)
        if j >= 0.88:
            checked["near"] += 1
            assert doc_id not in kept
            assert dups[doc_id] in by_id and _jaccard(by_id[dups[doc_id]], text) >= 0.8 or dups[doc_id] == f"{fam}-v0"
        elif j < 0.6:
            checked["far"] += 1
            assert doc_id not in dups and doc_id in kept
    assert checked["near"] > 30 and checked["far"] > 5
    assert stats["docs_in"] == len(recs) + 3 and stats["rejected_read"] == 2  # empty text, bad JSON
    assert {"one-word", "punct", "cjk"} <= kept and stats["no_words"] == 1
    assert stats["duplicates"] == len(dups) == stats["docs_in"] - stats["docs_out"]
    assert sum(int(k) * v for k, v in stats["cluster_sizes"].items()) == len(dups) + stats["clusters"]
    rejected = (tmp_path / "out" / "rejected" / "rejected.jsonl").read_text()
    assert "invalid_json" in rejected and "empty_text" in rejected


def test_same_output_for_workers_and_memory_budgets(corpus, tmp_path):
    root, _ = corpus
    outs = []
    for name, workers, budget in [("a", 1, "1GB"), ("b", 2, "64KB")]:
        stats = run_dedup(
            [str(root)], tmp_path / name, DedupConfig(workers=workers, memory_budget=budget, shard_docs=37)
        )
        outs.append((stats, tmp_path / name))
    (big, a), (tiny, b) = outs
    assert big["sorted_runs"] == big["bands"] + 1  # everything fit in one run per band
    assert tiny["sorted_runs"] >= 3 * (tiny["bands"] + 1)  # external sort: several runs per band
    assert (a / "duplicates.jsonl").read_bytes() == (b / "duplicates.jsonl").read_bytes()
    assert [p.read_bytes() for p in sorted(a.glob("part-*"))] == [p.read_bytes() for p in sorted(b.glob("part-*"))]
    assert big["cluster_sizes"] == tiny["cluster_sizes"] and big["duplicates"] > 50
    # many files: each worker reads whole files itself (the other path); same documents, same output
    lines = "".join(p.read_text() for p in sorted(root.glob("*.jsonl"))).splitlines(keepends=True)
    split = tmp_path / "split"
    split.mkdir()
    for k in range(5):
        (split / f"part{k}.jsonl").write_text("".join(lines[k * 101 : (k + 1) * 101]))
    run_dedup([str(split)], tmp_path / "c", DedupConfig(workers=2, memory_budget="128KB", shard_docs=37))
    assert (a / "duplicates.jsonl").read_bytes() == (tmp_path / "c" / "duplicates.jsonl").read_bytes()
    assert _kept(a) == _kept(tmp_path / "c")


@pytest.mark.parametrize("keep", ["first", "longest"])
def test_incremental_equals_one_shot(corpus, tmp_path, keep):
    root, recs = corpus
    rng = np.random.default_rng(5)
    later = []
    for i, r in enumerate(recs[:120:3]):  # near copies of first-batch documents, some longer
        words = r["text"].split()
        words[int(rng.integers(len(words)))] = "edited"
        later.append({"id": f"new{i}", "text": " ".join(words + (["tail"] * 3 if i % 2 else []))})
    later += [{"id": f"fresh{i}", "text": f"an unrelated new document number {i} " * 3} for i in range(20)]
    batch2 = _write(tmp_path / "batch2" / "c.jsonl", later)
    cfg = DedupConfig(keep=keep, shard_docs=50)
    store = tmp_path / "store"
    run_dedup([str(root)], tmp_path / "inc1", cfg, incremental_store=store)
    s2 = run_dedup([str(batch2)], tmp_path / "inc2", cfg, incremental_store=store)
    run_dedup([str(root), str(batch2)], tmp_path / "once", cfg)

    final = _dups(tmp_path / "inc1")
    final.update(_dups(tmp_path / "inc2"))  # earlier-batch entries re-point or newly remove
    assert final == _dups(tmp_path / "once")
    kept = [i for i in _kept(tmp_path / "inc1") + _kept(tmp_path / "inc2") if i not in final]
    assert kept == _kept(tmp_path / "once")
    assert s2["store_docs"] == len(recs) + 3 + len(later) and s2["batch"] == 2
    if keep == "longest":
        assert s2["earlier_batch_changed"] > 0  # longer new copies replace kept first-batch documents
    with pytest.raises(ValueError, match="other settings"):
        run_dedup([str(batch2)], tmp_path / "inc3", DedupConfig(ngram=3), incremental_store=store)


def test_duplicate_ids_fail_naming_both_lines_unless_deduped(tmp_path):
    recs = [
        {"id": "a", "text": "alpha beta gamma delta epsilon zeta"},
        {"id": "b", "text": "other words here"},
        {"id": "a", "text": "completely different text of a second document"},
    ]
    path = _write(tmp_path / "in.jsonl", recs)
    with pytest.raises(DuplicateIdError, match=r"'a'.*in.jsonl line 1 and .*in.jsonl line 3"):
        run_dedup([str(path)], tmp_path / "out", DedupConfig())
    stats = run_dedup([str(path)], tmp_path / "out2", DedupConfig(dedupe_ids=True))
    assert stats["duplicate_ids"] == 1 and stats["docs_out"] == 2
    assert '"duplicate_id"' in (tmp_path / "out2" / "rejected" / "rejected.jsonl").read_text()


def test_exact_verify_and_keep_field(corpus, tmp_path):
    root, recs = corpus
    est = run_dedup([str(root)], tmp_path / "est", DedupConfig(exact_verify=False))
    exact = run_dedup([str(root)], tmp_path / "exact", DedupConfig(memory_budget="64KB"))  # exact by default
    assert exact["exact_verify"] and not est["exact_verify"]
    assert abs(exact["duplicates"] - est["duplicates"]) <= 0.05 * est["duplicates"]
    by_id = {r["id"]: r["text"] for r in recs}
    for doc_id, rep in _dups(tmp_path / "exact").items():  # families are stars: every edge is to the base
        assert _jaccard(by_id[doc_id], by_id[rep]) >= 0.8
    recs = [
        {"id": f"d{i}", "text": "shared words of one family of documents here " * 4, "score": s}
        for i, s in enumerate([0.1, 0.9, None, 0.5])
    ]
    path = _write(tmp_path / "scored.jsonl", recs)
    run_dedup([str(path)], tmp_path / "field", DedupConfig(keep="field:score"))
    assert _kept(tmp_path / "field") == ["d1"] and set(_dups(tmp_path / "field").values()) == {"d1"}


def test_cli_dedup_and_eval(corpus, tmp_path, capsys):
    from launch.cli import main

    root, _ = corpus
    out = tmp_path / "cli"
    assert main(["data", "dedup", str(root), "--output", str(out), "--workers", "1", "--memory-budget", "256KB"]) == 0
    assert json.loads((out / "stats.json").read_text())["docs_out"] == len(_kept(out))
    report = tmp_path / "eval.json"
    assert main(["data", "dedup-eval", str(root), "--dedup-output", str(out), "--output", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["doc_precision"] >= 0.97 and r["doc_recall"] >= 0.95 and r["true_pairs"] > 50
    with pytest.raises(SystemExit, match="input not found"):
        main(["data", "dedup", str(tmp_path / "missing"), "--output", str(out)])
    with pytest.raises(SystemExit, match="keep"):
        main(["data", "dedup", str(root), "--output", str(out), "--keep", "biggest"])
    with pytest.raises(SystemExit, match="memory budget"):
        main(["data", "dedup", str(root), "--output", str(out), "--memory-budget", "lots"])


def test_pipeline_stage_matches_standalone(corpus, tmp_path):
    from data_pipeline.io import read_documents
    from data_pipeline.steps.base import build_step

    root, _ = corpus
    standalone = _dups(tmp_path / "s") if run_dedup([str(root)], tmp_path / "s", DedupConfig()) else None
    files = sorted(root.glob("*.jsonl"))
    stage = build_step("minhash_dedup", {"memory_budget": "128KB"})
    work = tmp_path / "stage"
    work.mkdir()
    for shard, f in enumerate(files):
        stage.scan(read_documents(f), shard, work)
    stage.reduce(len(files), work)
    dropped = {}
    for shard, f in enumerate(files):
        stage.prepare(shard, work)
        stage.on_drop = lambda doc, step, reason, extra: dropped.__setitem__(doc.id, extra["duplicate_of"])
        list(stage.run(read_documents(f)))
    assert dropped == standalone and stage.stats.dropped["duplicate"] == len(standalone)


def test_unreadable_file_and_huge_document_are_counted_not_fatal(tmp_path):
    folder = tmp_path / "in"
    _write(
        folder / "ok.jsonl",
        [
            {"id": "a", "text": "some ordinary words in a small document"},
            {"id": "huge", "text": "word " * (11 * 1024 * 1024 // 5)},
        ],
    )
    (folder / "broken.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    stats = run_dedup([str(folder)], tmp_path / "out", DedupConfig())
    assert stats["docs_out"] == 1 and stats["rejected_read"] == 2
    rejected = (tmp_path / "out" / "rejected" / "rejected.jsonl").read_text()
    assert "too_large" in rejected and "broken.jsonl.gz" in rejected
