"""The whole pipeline: WARC + JSONL.gz + Parquet end to end, bad input in one run, --workers 1 vs 2,
SIGKILL midway then resume (byte-identical), config errors before any work, the classifier."""

from __future__ import annotations

import gzip
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard

from data_pipeline.io.readers import ReadError, iter_documents
from data_pipeline.pipeline import load_recipe, run_recipe
from framework.configtree import ConfigError
from tests.data_pipeline.corpus import (
    GERMAN,
    good_prose,
    real_docs,
    to_html,
    without_timings,
    write_jsonl_gz,
    write_parquet,
    write_warc,
)

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "configs" / "data" / "web.yaml"
JSONL = ROOT / "configs" / "data" / "jsonl.yaml"


def read_rejected(out: Path) -> list[dict]:
    recs = []
    for path in sorted((out / "rejected").glob("*.jsonl.zst")):
        with zstandard.open(path, "rt", encoding="utf-8") as fh:
            recs += [json.loads(line) for line in fh]
    return recs


def tree_bytes(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): without_timings(p.name, p.read_bytes())
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".anvil" not in p.parts
    }


def check_funnel(stats: dict) -> None:
    steps = stats["steps"]
    assert stats["docs_in"] == steps[0]["docs_in"] and stats["docs_out"] == steps[-1]["docs_out"]
    for prev, cur in zip(steps, steps[1:]):
        assert cur["docs_in"] == prev["docs_out"], cur["name"]
    for s in steps:
        assert set(s) >= {"name", "docs_in", "docs_out", "dropped"}
        assert s["docs_in"] - s["docs_out"] == sum(s["dropped"].values()), s["name"]


def test_web_recipe_on_warc_jsonl_parquet(tmp_path):
    prose = good_prose()
    assert len(prose) >= 16
    pages = [(f"http://example.org/{i}", to_html(t, f"page {i}")) for i, t in enumerate(prose[:4])]
    pages.append(("http://example.de/", to_html(GERMAN, "Stadt")))
    write_warc(tmp_path / "crawl.warc.gz", pages, binary_html=True)
    records = [{"id": f"j{i}", "text": t} for i, t in enumerate(prose[4:10])]
    records += [
        {"id": "dup", "text": prose[4]},
        {
            "id": "short",
            "text": "This brief note has only a few distinct words in it, which is far below the "
            "minimum length that the quality rules require for a page.",
        },
        {"id": "lorem", "text": "Lorem ipsum dolor sit amet, this is filler.\n" + prose[14]},
    ]
    write_jsonl_gz(tmp_path / "dump.jsonl.gz", records)
    write_parquet(tmp_path / "table.parquet", [{"id": f"p{i}", "text": t} for i, t in enumerate(prose[10:14])])
    out = tmp_path / "out"
    recipe = load_recipe(
        WEB, [f"input=[{tmp_path}/crawl.warc.gz, {tmp_path}/dump.jsonl.gz, {tmp_path}/table.parquet]", f"output={out}"]
    )
    stats = run_recipe(recipe)
    check_funnel(stats)
    assert stats["docs_in"] == 6 + 9 + 4
    assert stats["shards"] == 1  # small files are grouped into one task
    assert stats["skipped_records"] == {"non_html": 1, "request": 5, "revisit": 1}
    rejected = read_rejected(out)
    assert len(rejected) == stats["docs_in"] - stats["docs_out"]
    by_id = {r.get("id"): r for r in rejected}
    assert (by_id["dup"]["step"], by_id["dup"]["reason"], by_id["dup"]["duplicate_of"]) == (
        "exact_dedup",
        "duplicate",
        "j0",
    )
    assert (by_id["short"]["step"], by_id["short"]["reason"]) == ("gopher_quality", "short_doc")
    assert (by_id["lorem"]["step"], by_id["lorem"]["reason"]) == ("c4", "lorem_ipsum")
    assert [(r["step"], r["reason"]) for r in rejected if r["step"] == "read"] == [("read", "binary_payload")]
    assert any(r["step"] == "language" and r["reason"] == "lang_de" for r in rejected)
    kept = list(iter_documents(out))
    assert len(kept) == stats["docs_out"] >= 8
    sources = {d.id[0] if d.id[0] in "jp" else "w" for d in kept}
    assert sources == {"j", "p", "w"}
    assert all(d.metadata["lang"] == "en" and "<p>" not in d.text for d in kept)
    saved = json.loads((out / "stats.json").read_text())
    assert saved["docs_out"] == stats["docs_out"] and [s["name"] for s in saved["steps"]][:3] == [
        "read",
        "extract",
        "language",
    ]
    report = (out / "report.html").read_text()
    assert report.count("<svg") >= 3 and "lorem_ipsum" in report and "short_doc" in report


def _shards(folder: Path, n: int = 6) -> Path:
    folder.mkdir()
    docs = real_docs()[:300]
    per = len(docs) // n
    for s in range(n):
        recs = [{"id": d.id, "text": d.text} for d in docs[s * per : (s + 1) * per]]
        recs.append({"id": f"copy-{s}", "text": good_prose()[0]})  # copies across shards
        if s in (0, n // 2):
            recs.append(
                {"id": f"twin-{s}", "text": good_prose()[-1]}
            )  # one exact duplicate pair (not among docs[:300])
        write_jsonl_gz(folder / f"shard-{s}.jsonl.gz", recs)
    return folder


def test_workers_and_sigkill_resume_are_byte_identical(tmp_path):
    inp = _shards(tmp_path / "in")
    overrides = [
        "steps=[language, line_dedup, gopher_quality, c4, exact_dedup, pii]",
        "shard_bytes=1",
    ]  # a task per file
    ref = tmp_path / "w1"
    stats = run_recipe(load_recipe(JSONL, overrides + [f"input={inp}", f"output={ref}"]), workers=1)
    check_funnel(stats)
    assert stats["shards"] == 6
    by_name = {s["name"]: s for s in stats["steps"]}
    assert by_name["line_dedup"]["dropped"]["all_boilerplate"] >= 6  # the copies: every line repeats
    assert by_name["exact_dedup"]["dropped"]["duplicate"] >= 1  # twin-3 (and natural duplicates)
    run_recipe(load_recipe(JSONL, overrides + [f"input={inp}", f"output={tmp_path / 'w2'}"]), workers=2)
    expected = tree_bytes(ref)
    assert tree_bytes(tmp_path / "w2") == expected

    out = tmp_path / "crash"
    cmd = [sys.executable, "-m", "launch.cli", "data", "run", str(JSONL), *overrides, f"input={inp}", f"output={out}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = out / ".anvil" / "markers"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(markers.glob("seg0-*.json"))) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "stats.json").exists(), "the run finished before it could be killed"
    done = len(list(markers.glob("*.json")))
    assert 0 < done
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=300, capture_output=True)
    assert tree_bytes(out) == expected


def test_bad_inputs_in_one_run(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    good = [{"id": f"g{i}", "text": t} for i, t in enumerate(good_prose()[:3])]
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in good * 50).encode())
    (inp / "truncated.jsonl.gz").write_bytes(data[: len(data) // 2])
    data = zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in good * 50).encode())
    (inp / "truncated.jsonl.zst").write_bytes(data[: len(data) // 2])
    lines = [
        json.dumps(good[0]).encode(),
        b'{"id": "broken", "text": ',
        json.dumps({"id": "notext"}).encode(),
        json.dumps({"id": "num", "text": 42}).encode(),
        b'{"id": "utf", "text": "caf\xe9 \xff"}',
        json.dumps({"id": "empty", "text": "   \n "}).encode(),
        json.dumps({"id": "huge", "text": "word " * (10 * 1024 * 1024)}).encode(),
    ]  # 50 MB
    (inp / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (inp / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good[1:]))
    write_warc(inp / "binary.warc.gz", [("http://e.org/", to_html(good_prose()[3]))], binary_html=True)
    out = tmp_path / "out"
    stats = run_recipe(load_recipe(WEB, [f"input={inp}", f"output={out}"]))
    check_funnel(stats)
    read = [r for r in read_rejected(out) if r["step"] == "read"]
    got = {(Path(r["source"]).name, r["reason"]) for r in read}
    assert got == {
        ("truncated.jsonl.gz", "truncated_file"),
        ("truncated.jsonl.zst", "truncated_file"),
        ("bad.jsonl", "invalid_json"),
        ("bad.jsonl", "missing_text"),
        ("bad.jsonl", "text_not_string"),
        ("bad.jsonl", "invalid_utf8"),
        ("bad.jsonl", "empty_text"),
        ("bad.jsonl", "too_large"),
        ("binary.warc.gz", "binary_payload"),
    } | ({("truncated.jsonl.gz", "invalid_json")} & got)
    assert all(("line" in r) != ("offset" in r) for r in read)
    assert {r["line"] for r in read if r["source"].endswith("bad.jsonl")} == {2, 3, 4, 5, 6, 7}
    assert stats["docs_out"] >= 3  # the good documents went on

    from launch.cli import main

    with pytest.raises(SystemExit, match=r"bad\.jsonl: line 2: invalid_json"):
        main(["data", "run", str(WEB), f"input={inp / 'bad.jsonl'}", f"output={tmp_path / 'strict'}", "--strict"])


def test_config_errors_before_any_work(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "1", "text": "x"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - language: {}\n  - gopher_quality: {min_doc_wrds: 5}\n")
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"steps\[1\]\.gopher_quality\.min_doc_wrds.*min_doc_words"):
        run_recipe(load_recipe(recipe, [f"input={tmp_path / 'a.jsonl'}", f"output={out}"]))
    recipe.write_text("steps:\n  - language\n  - minhash_dedupe: {}\n")
    with pytest.raises(ConfigError, match=r"steps\[1\].*unknown step 'minhash_dedupe'"):
        run_recipe(load_recipe(recipe, [f"input={tmp_path / 'a.jsonl'}", f"output={out}"]))
    with pytest.raises(ConfigError, match="input"):
        run_recipe(load_recipe(WEB, [f"output={out}"]))
    with pytest.raises(ConfigError, match="nothing"):
        run_recipe(load_recipe(WEB, [f"input={tmp_path / 'nothing'}", f"output={out}"]))
    with pytest.raises(ConfigError, match="classifier.model"):
        run_recipe(
            load_recipe(
                JSONL, ["steps=[{classifier: {model: missing.npz}}]", f"input={tmp_path / 'a.jsonl'}", f"output={out}"]
            )
        )
    assert not out.exists()


def test_train_classifier_and_filter(tmp_path):
    import numpy as np

    from launch.cli import main

    pos = [{"id": f"pos{i}", "text": d.text} for i, d in enumerate(real_docs()[:60])]  # prose docstrings
    import json as json_mod
    import textwrap

    code = [inspect.getsource(m) for m in (json_mod, textwrap, inspect)]
    chunks = [c[i : i + 1500] for c in code for i in range(0, len(c), 1500)][:60]
    neg = [{"id": f"neg{i}", "text": t} for i, t in enumerate(chunks)]
    write_jsonl_gz(tmp_path / "pos.jsonl.gz", pos)
    write_jsonl_gz(tmp_path / "neg.jsonl.gz", neg)
    model = tmp_path / "quality.npz"
    assert (
        main(
            [
                "data",
                "train-classifier",
                "--positive",
                str(tmp_path / "pos.jsonl.gz"),
                "--negative",
                str(tmp_path / "neg.jsonl.gz"),
                "--output",
                str(model),
                "--n-features",
                "65536",
            ]
        )
        == 0
    )
    with np.load(model, allow_pickle=False) as data:
        assert data["coef"].shape == (65536,)
    out = tmp_path / "out"
    stats = run_recipe(
        load_recipe(
            JSONL,
            [
                f"steps=[{{classifier: {{model: {model}, threshold: 0.5}}}}]",
                f"input=[{tmp_path / 'pos.jsonl.gz'}, {tmp_path / 'neg.jsonl.gz'}]",
                f"output={out}",
            ],
        )
    )
    kept = {d.id for d in iter_documents(out)}
    assert len([i for i in kept if i.startswith("pos")]) >= 54 and len([i for i in kept if i.startswith("neg")]) <= 6
    assert stats["steps"][1]["dropped"]["below_threshold"] == 120 - len(kept)
    assert all(0 <= d.metadata["quality_score"] <= 1 for d in iter_documents(out))


def test_strict_reader_error_is_readable(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": 1}\n')
    with pytest.raises(ReadError, match=r"x\.jsonl: line 1: text_not_string"):
        run_recipe(load_recipe(JSONL, [f"input={tmp_path / 'x.jsonl'}", f"output={tmp_path / 'o'}"]), strict=True)


def test_cli_help_and_one_line_errors(capsys, tmp_path):
    from launch.cli import main

    for argv, needle in (
        (["data", "run", "--help"], "--workers"),
        (["data", "train-classifier", "--help"], "--positive"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0 and needle in capsys.readouterr().out
    with pytest.raises(SystemExit, match="train-classifier: input not found"):
        main(
            [
                "data",
                "train-classifier",
                "--positive",
                str(tmp_path / "x"),
                "--negative",
                str(tmp_path / "y"),
                "--output",
                str(tmp_path / "m.npz"),
            ]
        )
