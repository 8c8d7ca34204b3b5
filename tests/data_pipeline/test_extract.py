"""`extract: {engine: trafilatura | resiliparse}`: both engines keep the same documents, drop with the
same reasons and survive the same bad input; `configs/data/web_fast.yaml` is the web recipe on
Resiliparse."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from data_pipeline.document import Document
from data_pipeline.steps.base import build_step
from framework.configtree import ConfigError
from tests.data_pipeline.corpus import to_html

pytest.importorskip("resiliparse")
ROOT = Path(__file__).resolve().parents[2]
ENGINES = ["trafilatura", "resiliparse"]
PROSE = (
    "The town council met on Tuesday to discuss the budget for the coming year. Members agreed that "
    "the library should have longer opening hours and that the park needs new benches.\n\n"
    "Several residents spoke about traffic near the school, and the council promised a study of "
    "the crossing before the winter. The meeting ended after two hours of debate."
)


def html_doc(doc_id: str, page: str) -> Document:
    return Document(doc_id, page, {"content_type": "text/html", "url": f"http://e.org/{doc_id}"})


def corpus() -> list[Document]:
    return [html_doc(f"good{i}", to_html(f"Story {i}. " + PROSE * 2, f"News {i}")) for i in range(3)] + [
        html_doc("empty", "<html><body></body></html>"),
        html_doc("script_only", "<html><body><script>var a = 1;</script></body></html>"),
        html_doc("binary_junk", "\x00\x01\x02" * 50),
        Document("plain", "already text, no content type"),
    ]


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_extracts_the_main_text(engine):
    step = build_step("extract", {"engine": engine})
    doc = html_doc("p", to_html(PROSE * 3, "Budget news"))
    assert step.process(doc) is None
    assert "library should have longer opening hours" in doc.text and "<p>" not in doc.text
    assert "Home | About" not in doc.text and "Footer links" not in doc.text  # nav and footer left out
    assert "content_type" not in doc.metadata and doc.metadata["url"] == "http://e.org/p"


def test_trafilatura_text_of_a_page_does_not_depend_on_the_pages_before_it():
    """In-page dedup must not count segments across pages (trafilatura's process-wide cache would:
    the shared paragraph vanished from the 4th page onwards, so output depended on order/--workers)."""
    from data_pipeline.io.html import HtmlExtractor

    extractor = HtmlExtractor()
    page = to_html(PROSE * 2, "Budget news")
    texts = [extractor.extract(page, "http://e.org/p")[0] for _ in range(5)]
    assert texts[0] and "library should have longer opening hours" in texts[0]
    assert all(t == texts[0] for t in texts)


def test_engines_keep_the_same_documents_with_the_same_reasons():
    results = {}
    for engine in ENGINES:
        step = build_step("extract", {"engine": engine})
        kept = [d.id for d in step.run(corpus())]
        results[engine] = (kept, Counter(step.stats.dropped))
    assert results["trafilatura"] == results["resiliparse"]
    assert results["resiliparse"] == (["good0", "good1", "good2", "plain"], Counter(no_text=3))


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_bad_input(engine, monkeypatch):
    step = build_step("extract", {"engine": engine, "max_html_chars": 2000, "timeout_s": 0.2})
    long = html_doc("long", to_html(PROSE * 40, "Long"))
    assert step.process(long) is None and step.stats.edits["html_truncated"] == 1
    assert "town council" in long.text and len(long.text) < 2000

    def slow(html, url):
        time.sleep(3)

    monkeypatch.setattr(step.extractor, "_run", slow)
    assert step.process(html_doc("slow", to_html(PROSE))) == "timeout"

    def broken(html, url):
        raise ValueError("parser bug")

    monkeypatch.setattr(step.extractor, "_run", broken)
    assert step.process(html_doc("broken", to_html(PROSE))) == "extract_error"


def test_resiliparse_hostile_pages():
    step = build_step("extract", {"engine": "resiliparse"})
    surrogate = html_doc("s", "<html><body><p>" + "words \ud800 here " * 30 + "</p></body></html>")
    assert step.process(surrogate) == "extract_error"
    start = time.process_time()  # main-content pass: ~40 s at this depth
    deep = html_doc("deep", "<div>" * 20_000 + "A deep sentence of text." + "</div>" * 20_000)
    step.process(deep)
    assert time.process_time() - start < 5 and step.stats.edits["deep_html_full_text"] == 1
    assert "deep sentence" in deep.text


def test_bad_engine_names_the_key():
    with pytest.raises(ConfigError, match=r"steps\[0\]\.extract\.engine.*'trafilatura', 'resiliparse'.*'lxml'"):
        build_step("extract", {"engine": "lxml"}, "steps[0]")


def test_web_fast_is_the_web_recipe_on_resiliparse(tmp_path):
    web = yaml.safe_load((ROOT / "configs/data/web.yaml").read_text())
    fast = yaml.safe_load((ROOT / "configs/data/web_fast.yaml").read_text())
    assert fast["steps"][0]["extract"]["engine"] == "resiliparse" and "engine" not in web["steps"][0]["extract"]
    assert [list(s) for s in fast["steps"]] == [list(s) for s in web["steps"]]
    assert fast["steps"][1:] == web["steps"][1:]
