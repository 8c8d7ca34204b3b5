"""`compat: datatrove` on the four heuristic filters: decisions and reasons as DataTrove 0.10 makes
them, checked against DataTrove's own decisions on real documentation pages (golden/, written by
benchmarks/datatrove_compat.py, which needs DataTrove; CI does not); the default mode unchanged."""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from data_pipeline.document import Document
from data_pipeline.steps.base import build_step, parse_step_spec
from data_pipeline.steps.quality import DATATROVE_REASONS, GopherQuality
from framework.configtree import ConfigError

ROOT = Path(__file__).resolve().parents[3]
FIXTURE = Path(__file__).parent / "golden" / "datatrove_decisions.jsonl.gz"
FILTERS = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]


@lru_cache(maxsize=1)
def fixture() -> list[dict]:
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    assert "_header" in rows[0], "the fixture starts with a header naming its source"
    return rows[1:]


def decisions(name: str, params: dict) -> list[list[str] | None]:
    """[step, reason] for each fixture document dropped by the step alone, None when kept."""
    step = build_step(name, params)
    out = []
    for row in fixture():
        reason = step.process(Document(row["id"], row["text"]))
        reason = reason[0] if isinstance(reason, tuple) else reason
        out.append(None if reason is None else [name, reason])
    return out


def as_datatrove(decision):
    return None if decision is None else [decision[0], DATATROVE_REASONS[decision[0]].get(decision[1], decision[1])]


@pytest.mark.parametrize("name", FILTERS)
def test_compat_datatrove_agrees_with_datatrove(name):
    rows = fixture()
    assert len(rows) >= 200
    got = [as_datatrove(d) for d in decisions(name, {"compat": "datatrove"})]
    expected = [row["datatrove"][name] for row in rows]
    misses = [(row["id"], e, g) for row, e, g in zip(rows, expected, got) if e != g]
    assert 1 - len(misses) / len(rows) >= 0.99, misses[:5]
    assert len({tuple(e) for e in expected if e}) >= 2 or name == "c4"  # the fixture exercises several rules


@pytest.mark.parametrize("name", FILTERS)
def test_default_mode_is_unchanged(name):
    """The paper-faithful default decides as it did when the fixture was written, and `paper`
    spelled out is the same mode."""
    expected = [row["anvil_paper"][name] for row in fixture()]
    assert decisions(name, {}) == expected
    assert decisions(name, {"compat": "paper"}) == expected


def test_the_modes_differ_where_datatrove_counts_punctuation_as_words():
    rows = fixture()
    paper = decisions("gopher_quality", {})
    compat = decisions("gopher_quality", {"compat": "datatrove"})
    changed = sum(a != b for a, b in zip(paper, compat))
    assert changed >= len(rows) // 10
    alpha = sum(
        1 for row in rows if row["datatrove"]["gopher_quality"] == ["gopher_quality", "gopher_below_alpha_threshold"]
    )
    assert alpha >= 10


@pytest.mark.parametrize(
    "text, params, paper, datatrove",
    [
        # spaCy keeps `e.g.` one token: 2 sentences a line for DataTrove, 3 for the paper rule's regex
        (
            "Use e.g. this one here. Fine.\nThen e.g. that one there. Good.",
            {},
            (None, None),
            ("too_few_sentences", None),
        ),
        # str.splitlines() also ends a line at \r
        (
            "The first line is here.\rSecond line has words. Third one too.\rFourth line ends well. Fifth is here.",
            {},
            (
                None,
                "The first line is here.\rSecond line has words. Third one too.\rFourth line ends well. Fifth is here.",
            ),
            (
                None,
                "The first line is here.\nSecond line has words. Third one too.\nFourth line ends well. Fifth is here.",
            ),
        ),
        # nothing left and no sentence minimum: DataTrove keeps an empty document
        (
            "no punctuation at all\nanother line without it",
            {"min_num_sentences": 0},
            ("no_lines_left", None),
            (None, ""),
        ),
    ],
)
def test_c4_modes_on_the_rules_where_they_differ(text, params, paper, datatrove):
    """Expected values are DataTrove 0.10.1's C4QualityFilter's (min_num_sentences -1 for 0)."""
    for mode, (reason, kept_text) in (("paper", paper), ("datatrove", datatrove)):
        doc = Document("d", text)
        assert build_step("c4", {**params, "compat": mode}).process(doc) == reason, mode
        if kept_text is not None:
            assert doc.text == kept_text, mode


def test_unknown_compat_value_is_rejected_with_its_key():
    with pytest.raises(ConfigError, match=r"steps\[3\]\.c4\.compat.*expected one of \['paper', 'datatrove'\].*'spacy'"):
        build_step("c4", {"compat": "spacy"}, "steps[3]")
    with pytest.raises(ValueError, match=r"gopher_quality\.compat: expected one of"):
        GopherQuality(GopherQuality.Params(compat="DataTrove"))


def test_fineweb_like_recipe_decides_as_datatrove():
    recipe = yaml.safe_load((ROOT / "configs" / "data" / "fineweb_like.yaml").read_text())
    specs = dict(parse_step_spec(spec, f"steps[{i}]") for i, spec in enumerate(recipe["steps"]))
    for name in FILTERS:
        assert build_step(name, specs[name]).params.compat == "datatrove"
