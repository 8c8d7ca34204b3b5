"""stats.json steps carry `seconds`: each step's CPU seconds summed over tasks and workers (a corpus
stage: its scans, reduce and application), shown in report.html; and the web recipes end to end."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from data_pipeline.pipeline import load_recipe, run_recipe
from data_pipeline.steps import base
from tests.data_pipeline.corpus import GERMAN, to_html, write_jsonl_gz, write_warc
from tests.data_pipeline.test_pipeline import JSONL, WEB, read_rejected

BUSY_S = 0.03


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


class Busy(base.Step):
    def process(self, doc):
        burn(BUSY_S)


class BusyStage(base.CorpusStage):
    @dataclass
    class Params:
        pass

    def scan(self, docs, shard, workdir):
        for _ in docs:
            pass
        burn(2 * BUSY_S)

    def reduce(self, num_shards, workdir):
        burn(3 * BUSY_S)

    def prepare(self, shard, workdir):
        pass

    def process(self, doc):
        return None


@pytest.fixture
def busy_steps(monkeypatch):
    base.load_registry()
    for name, cls in (("busy", Busy), ("busy_stage", BusyStage)):
        monkeypatch.setattr(cls, "name", name)
        monkeypatch.setitem(base.STEPS, name, cls)


def test_seconds_per_step_summed_over_tasks_and_workers(tmp_path, busy_steps):
    inp = tmp_path / "in"
    inp.mkdir()
    for s in range(2):
        write_jsonl_gz(
            inp / f"s{s}.jsonl.gz", [{"id": f"{s}-{i}", "text": f"document {s} {i} " * 20} for i in range(3)]
        )
    out = tmp_path / "out"
    stats = run_recipe(
        load_recipe(JSONL, [f"input={inp}", f"output={out}", "shard_bytes=1", "steps=[busy, busy_stage, exact_dedup]"]),
        workers=2,
    )
    seconds = {s["name"]: s["seconds"] for s in stats["steps"]}
    assert list(seconds) == ["read", "busy", "busy_stage", "exact_dedup"]
    assert all(isinstance(v, float) and v >= 0 for v in seconds.values())
    assert 6 * BUSY_S * 0.9 <= seconds["busy"] < 6 * BUSY_S + 1  # 2 tasks x 3 documents, two workers
    assert seconds["busy_stage"] >= (2 * 2 + 3) * BUSY_S * 0.9  # 2 scans + the reduce
    assert seconds["exact_dedup"] < seconds["busy"]
    saved = json.loads((out / "stats.json").read_text())
    assert [s["seconds"] for s in saved["steps"]] == list(seconds.values())
    report = (out / "report.html").read_text()
    assert "CPU seconds" in report and report.count('<td class="cpu">') == 4


def test_web_fast_recipe_keeps_what_web_keeps(tmp_path):
    """Same tiny crawl through both recipes: the same documents kept, the same rejections."""
    pages = [
        (f"http://example.org/{i}", to_html(f"Report {i} from the valley. " + text, f"page {i}"))
        for i, text in enumerate(_prose())
    ]
    pages.append(("http://example.de/", to_html(GERMAN, "Stadt")))
    write_warc(tmp_path / "crawl.warc.gz", pages, binary_html=True)
    kept, rejected = {}, {}
    for name, recipe in (("web", WEB), ("web_fast", WEB.with_name("web_fast.yaml"))):
        out = tmp_path / name
        stats = run_recipe(load_recipe(recipe, [f"input={tmp_path}/crawl.warc.gz", f"output={out}"]))
        kept[name] = stats["docs_out"]
        rejected[name] = sorted((r.get("id", ""), r["step"], r["reason"]) for r in read_rejected(out))
        assert all(s["seconds"] >= 0 for s in stats["steps"])
    assert kept["web"] == kept["web_fast"] == 4
    assert rejected["web"] == rejected["web_fast"]
    assert {r[1:] for r in rejected["web_fast"]} == {("read", "binary_payload"), ("language", "lang_de")}


def _prose() -> list[str]:
    return [
        (
            "The harbour committee published its yearly account of the fishing season on Monday.\n"
            "Boats returned with larger catches than last year, mostly cod and haddock.\n"
            "Several captains said that the calm spring weather had helped them reach distant grounds.\n"
            "The committee also warned that fuel prices could rise again before the winter.\n"
            "A public meeting about the new pier will take place in the town hall next month."
        ),
        (
            "Our city library will open on Sunday afternoons from the first week of March.\n"
            "The council approved the extra hours after hundreds of readers signed a petition.\n"
            "Students in particular had asked for a quiet place to work during the weekend.\n"
            "Two new librarians have been hired, and volunteers will run a small reading club for children.\n"
            "The director hopes that the change will bring more families into the building."
        ),
        (
            "A young engineer from the valley has designed a cheap pump for village wells.\n"
            "Her design uses bicycle parts and can be repaired with ordinary tools by anyone.\n"
            "Farmers who tested it during the dry summer reported that it rarely broke down.\n"
            "A charity plans to build three hundred of the pumps over the coming two years.\n"
            "She says the most difficult part was keeping the price below what families could afford."
        ),
        (
            "The museum reopened its east wing after a long restoration of the painted ceilings.\n"
            "Visitors can now see portraits that had been stored in the basement for decades.\n"
            "Restorers removed layers of old varnish and discovered the signature of a forgotten artist.\n"
            "Guided tours in English and French start every hour, and tickets are cheaper on Thursdays.\n"
            "The curator expects the exhibition to attract many school groups during the spring."
        ),
    ]
