"""Exact verification (the default): the vectorised intersection equals Python sets, the verify
phase keeps exactly the candidate pairs whose n-gram Jaccard reaches the threshold, every entry
point verifies by default and `--no-exact-verify` / `exact_verify: false` turn it off."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from data_pipeline.dedup import lsh, verify
from data_pipeline.dedup.api import run_dedup
from data_pipeline.dedup.index import DedupConfig
from data_pipeline.dedup.minhash import shingles
from data_pipeline.dedup.synthetic import EDITS, edit_text, generate, plant_families


def _random_sets(rng, count, pool_size=400):
    pool = rng.integers(0, 2**64, pool_size, dtype=np.uint64)
    # a third of the pool are consecutive values: their keys (high bits only) collide, the kernel
    # must walk runs of equal keys
    pool[: pool_size // 3] = np.uint64(0x5A5A5A5A5A000000) + np.arange(pool_size // 3, dtype=np.uint64)
    sets = [np.unique(rng.choice(pool, int(rng.integers(0, 80)))) for _ in range(count)]
    sets[3] = np.empty(0, np.uint64)  # an empty document
    return sets


@pytest.mark.parametrize("block", [1, 64, 1 << 14])
def test_intersections_equal_python_sets(block):
    rng = np.random.default_rng(block)
    sets = _random_sets(rng, 120)
    off = np.concatenate([[0], np.cumsum([len(s) for s in sets])])
    flat = np.concatenate(sets)
    pairs = np.array([(x, y) for x in range(120) for y in range(x + 1, 120) if rng.random() < 0.2])
    pairs = pairs[rng.permutation(len(pairs))]  # any order: grouped by center inside
    got = verify.intersection_sizes(flat, off, pairs[:, 0], pairs[:, 1], block=block)
    want = [len(set(sets[x].tolist()) & set(sets[y].tolist())) for x, y in pairs.tolist()]
    assert got.tolist() == want


@pytest.mark.parametrize("split", [False, True])
def test_pair_verifier_decides_exactly_like_python_sets(tmp_path, split):
    """Through the on-disk sets (one file, or one per shard; coalesced preads) and the size
    bound, for several thresholds."""
    rng = np.random.default_rng(7)
    base = _random_sets(rng, 60, pool_size=120)
    sets = base + [
        np.unique(np.concatenate([s, rng.integers(0, 2**64, k, dtype=np.uint64)]))
        for s, k in zip(base, rng.integers(0, 12, len(base)))
    ]  # near copies: Jaccard spread around 0.8
    lens = np.array([len(s) for s in sets])
    files = [(tmp_path / "shingles.u64", len(sets))]
    if split:  # the shards' own files, as a one-shot run reads them
        files = [(tmp_path / f"shard{k}.u64", len(part)) for k, part in enumerate((sets[:7], sets[7:90], sets[90:]))]
    for (path, _), part in zip(files, (sets[:7], sets[7:90], sets[90:]) if split else (sets,)):
        np.concatenate(part).astype("<u8").tofile(path)
    pairs = np.array([(x, y) for x in range(len(sets)) for y in range(x + 1, len(sets)) if rng.random() < 0.3])
    pairs = np.concatenate([pairs, [(i, i + 60) for i in range(60)]])
    store = SimpleNamespace(path=tmp_path)
    for t in (0.5, 0.8, 0.9, 1.0):
        verifier = verify.PairVerifier(store, DedupConfig(threshold=t), lens, files)
        got = verifier(pairs[:, 0], pairs[:, 1])
        assert got.tolist() == verify.exact_pairs_reference([s.tolist() for s in sets], pairs.tolist(), t)
        assert got.any() or t == 1.0


def _corpus(root: Path) -> list[dict]:
    recs = [
        r for r, _ in generate(260, family_fraction=0.5, edit_rates=(0.0, 0.02, 0.03, 0.05), words=(40, 90), seed=9)
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def test_verify_phase_keeps_exactly_the_candidates_at_or_above_the_threshold(tmp_path):
    """Candidates (every band's runs) vs verified pairs, against Jaccard of the n-gram strings."""
    from data_pipeline.dedup.api import scan_file
    from data_pipeline.dedup.reduce import reduce

    recs = _corpus(tmp_path / "in")
    cfg = DedupConfig(memory_budget="64KB", shard_docs=50).resolved()
    shards, _, _ = scan_file(tmp_path / "in" / "a.jsonl", 0, tmp_path / "work", cfg)
    work = tmp_path / "work" / "reduce"
    reduce(tmp_path / "store", shards, cfg, work=work)
    cand = set()
    for run in sorted(work.glob("cand-*.keys")):
        keys, docs = lsh._RunReader(Path(str(run)[:-5]), 1 << 20).read()
        cand.update(zip(keys.astype(np.int64).tolist(), docs.tolist()))
    verified = set()
    for f in sorted(work.glob("verified-*.npy")):
        verified.update(map(tuple, np.load(f).T.tolist()))
    grams = [set(shingles(r["text"], 5)) for r in recs]
    want = {(a, c) for a, c in cand if len(grams[a] & grams[c]) / len(grams[a] | grams[c]) >= 0.8}
    assert len(cand) > len(want) > 40 and verified == want
    summary = json.loads((work / "verify.json").read_text())
    assert summary["chunks"] > 1  # the 64KB budget cut the pairs into several chunks
    assert summary["counts"]["candidate_pairs"] == len(cand) and summary["counts"]["verified_pairs"] == len(want)


def test_exact_verification_is_the_default_everywhere(tmp_path):
    from data_pipeline.steps.base import build_step
    from launch.cli import main

    assert DedupConfig().exact_verify
    assert build_step("minhash_dedup", {}).cfg.exact_verify
    assert not build_step("minhash_dedup", {"exact_verify": False}).cfg.exact_verify
    _corpus(tmp_path / "in")
    outs = {}
    for name, flags in [("default", []), ("old-flag", ["--exact-verify"]), ("off", ["--no-exact-verify"])]:
        out = tmp_path / name
        assert main(["data", "dedup", str(tmp_path / "in"), "--output", str(out), *flags]) == 0
        outs[name] = json.loads((out / "stats.json").read_text())
    assert outs["default"]["exact_verify"] and outs["old-flag"] == outs["default"]
    assert not outs["off"]["exact_verify"] and outs["off"]["candidate_pairs"] == outs["default"]["candidate_pairs"]
    # a store built without exact verification: extending it with the default names the flag
    run_dedup([str(tmp_path / "in")], tmp_path / "b1", DedupConfig(exact_verify=False), tmp_path / "store")
    with pytest.raises(ValueError, match="--no-exact-verify"):
        run_dedup([str(tmp_path / "in")], tmp_path / "b2", DedupConfig(), tmp_path / "store")


def test_planted_edits_and_per_edit_scores():
    from data_pipeline.dedup.evaluate import score_planted

    rng = np.random.default_rng(0)
    text = "\n".join(" ".join(f"w{i}x{j}" for j in range(12)) for i in range(10))  # 10 paragraphs, 120 words
    vocab = np.array(["alpha", "beta"], dtype=object)
    assert len(edit_text(text, "truncate", 0.25, rng, vocab).split()) == 90
    assert sorted(edit_text(text, "reorder", 0.5, rng, vocab).split("\n")) == sorted(text.split("\n"))
    longer = edit_text(text, "boilerplate", 0.2, rng, vocab)
    assert text in longer and len(longer.split()) == 144
    assert set(edit_text(text, "substitute", 0.5, rng, vocab).split()) & {"alpha", "beta"}
    docs = [{"id": f"d{i}", "text": text.replace("w", f"v{i}")} for i in range(6)]
    out, planted = plant_families(docs, 12, seed=1)
    assert len(out) == 18 and {p.edit for p in planted} <= set(EDITS) and len({d["id"] for d in out}) == 18
    # docs 0-3: 0~1 true pair, 2 is 0's variant below the threshold; 3 a variant of 0 the run missed
    pairs = np.array([[0, 1], [0, 3]])
    label = np.array([0, 0, 0, 3])
    flagged = np.array([True, True, True, False])
    got = score_planted(pairs, label, flagged, [(1, 0, "truncate"), (2, 0, "truncate"), (3, 0, "reorder")])
    assert got["truncate"]["doc_precision"] == 0.5 and got["truncate"]["doc_recall"] == 1.0
    assert got["truncate"]["pair_precision"] == 0.5 and got["reorder"]["pair_recall"] == 0.0
