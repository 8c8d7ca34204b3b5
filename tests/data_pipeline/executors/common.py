"""Shared by the executor tests: the sample corpus, local reference runs, and output comparison."""

from __future__ import annotations

from pathlib import Path

from data_pipeline.dedup.api import run_dedup
from data_pipeline.dedup.index import DedupConfig
from data_pipeline.pipeline import load_recipe, run_recipe
from data_pipeline.sample import write_sample_corpus
from tests.data_pipeline.corpus import without_timings

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "configs" / "data" / "demo.yaml"  # language .. exact_dedup, minhash_dedup, pii: 3 segments


def make_corpus(folder: Path, limit: int, shard_docs: int) -> Path:
    raw = folder / "raw"
    write_sample_corpus(raw, limit=limit, shard_docs=shard_docs)
    return raw


def overrides(raw: Path, out: Path) -> list[str]:
    return [f"input={raw}", f"output={out}", "shard_bytes=1"]  # one task per input file


def curate(raw: Path, out: Path, executor=None):
    return run_recipe(load_recipe(DEMO, overrides(raw, out)), workers=1, executor=executor)


def dedup_config() -> DedupConfig:
    return DedupConfig(threshold=0.7, memory_budget="8MB")


def dedup_local(raw: Path, out: Path) -> dict:
    return run_dedup([str(raw)], out, dedup_config())


def output_files(out: Path) -> dict[str, bytes]:
    """Every file a run leaves (kept parts, rejected/, duplicates.jsonl, stats.json, report.html),
    except dedup's timings.json (wall-clock seconds differ between any two runs), and with the
    steps' CPU seconds blanked in stats.json and report.html."""
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if not p.is_file() or rel.parts[0] in (".anvil", ".dedup-slurm"):
            continue
        if rel.name == "timings.json":
            continue
        files[str(rel)] = without_timings(rel.name, p.read_bytes())
    return files


def assert_same_output(expected: Path, got: Path) -> None:
    want, have = output_files(expected), output_files(got)
    assert sorted(have) == sorted(want)
    assert any(k.startswith("part-") for k in want) and "stats.json" in want
    for name in want:
        assert have[name] == want[name], f"{name} differs from the local executor's"
