"""Each heuristic filter: real documents that must pass, crafted ones that must fail, by reason."""

from __future__ import annotations

import pytest

from data_pipeline.document import Document
from data_pipeline.steps.base import build_step
from framework.configtree import ConfigError
from tests.data_pipeline.corpus import GERMAN, LOREM, good_prose

PROSE = (
    "The committee met on Tuesday to discuss the budget for the coming year. Members agreed that the "
    "library should have longer opening hours, and that the park needs new benches. The mayor said "
    "that the town would look for money to pay for both projects. "
)


def check(name: str, text: str, params: dict | None = None):
    step = build_step(name, params or {})
    doc = Document("d", text)
    result = step.process(doc)
    return (result if not isinstance(result, tuple) else result[0]), doc


@pytest.mark.parametrize("name", ["gopher_quality", "gopher_repetition", "c4", "fineweb"])
def test_real_prose_passes(name):
    texts = good_prose()
    assert len(texts) >= 20
    for text in texts[:20]:
        assert check(name, text)[0] is None


@pytest.mark.parametrize(
    "text,reason",
    [
        ("Too short to be a page.", "short_doc"),
        (" ".join(["supercalifragilistic"] * 60) + " the and of", "above_avg_word_length"),
        (" ".join(["a", "an", "is", "it"] * 30) + " the and", "below_avg_word_length"),
        (PROSE + " ".join(["#tag"] * 40), "too_many_hashes"),
        ("\n".join(["- item number %d with the and of words" % i for i in range(30)]), "too_many_bullets"),
        (
            "\n".join(["the interesting sentence number %d continues onwards and then..." % i for i in range(30)]),
            "too_many_ellipsis",
        ),
        (" ".join(["12345 67890 2024 42"] * 20) + " the and", "below_alpha_words_ratio"),
        (" ".join(["lorem ipsum dolor sit amet consectetur adipiscing"] * 10), "not_enough_stop_words"),
    ],
)
def test_gopher_quality_fails(text, reason):
    assert check("gopher_quality", text)[0] == reason


@pytest.mark.parametrize(
    "text,reason",
    [
        ("\n\n".join([PROSE, "Buy now and save.", "Buy now and save.", "Buy now and save."]), "dup_para_frac"),
        ("\n".join([PROSE] + ["Subscribe to our newsletter today"] * 4), "dup_line_frac"),
        (PROSE + " ".join(["click here"] * 80), "top_2_gram"),
        (
            "\n".join([PROSE, PROSE.upper(), PROSE.lower()])
            + " "
            + " ".join(f"word{i} alpha beta gamma delta epsilon" for i in range(2)) * 1,
            "duplicated_5_n_grams",
        ),
    ],
)
def test_gopher_repetition_fails(text, reason):
    assert check("gopher_repetition", text)[0] == reason


def test_c4_rules():
    assert check("c4", LOREM)[0] == "lorem_ipsum"
    assert check("c4", PROSE + "\nCall it as f() { return 1; }.")[0] == "curly_bracket"
    assert check("c4", PROSE * 2 + "\nfunction() { return 1; }")[0] is None  # the line goes first
    assert check("c4", "One sentence here. Two sentences here.")[0] == "too_few_sentences"
    assert check("c4", "no punctuation at all\nanother line without it")[0] == "too_few_sentences"
    assert check("c4", "no punctuation at all", {"min_num_sentences": 0})[0] == "no_lines_left"
    reason, doc = check(
        "c4",
        PROSE + "\nMenu Home About\nPlease enable JavaScript to view this page.\n"
        "Read our privacy policy for details.\n" + PROSE,
    )
    assert reason is None
    assert "Menu" not in doc.text and "JavaScript" not in doc.text and "privacy" not in doc.text
    assert check("c4", PROSE * 2 + "[1] More text here with citations[edit] and more.")[1].text.count("[") == 0


@pytest.mark.parametrize(
    "text,reason",
    [
        ("\n".join(["A heading without a stop"] * 3 + ["Another list item"] * 20), "line_punct_ratio"),
        ("\n".join(["Short line."] * 20 + [PROSE]), "short_line_ratio"),
        (
            "\n".join(
                [PROSE, "This exact line repeats here in the page.", "This exact line repeats here in the page."]
            ),
            "char_dup_ratio",
        ),
        ("\n".join(f"Extraordinarily {i} incomprehensibilities." for i in range(40)), "list_ratio"),
    ],
)
def test_fineweb_fails(text, reason):
    assert check("fineweb", text)[0] == reason


def test_language():
    reason, doc = check("language", PROSE)
    assert reason is None and doc.metadata["lang"] == "en" and doc.metadata["lang_score"] >= 0.65
    assert check("language", GERMAN)[0] == "lang_de"
    assert check("language", GERMAN, {"languages": ["de"]})[0] is None
    assert check("language", "x1 y2 z3 ++ --", {"languages": [], "threshold": 0.99})[0] == "low_lang_score"


def test_normalize_and_pii():
    _, doc = check("normalize", "Cafe\u0301  au\t\tlait \n\n\n\nnext\x00 line  ")
    assert doc.text == "Caf\u00e9 au lait\n\nnext line"
    assert check("normalize", "  \x00 \n ")[0] == "empty_after_normalize"
    _, doc = check(
        "pii",
        "Write to jane.doe@example.com from 8.8.8.8 or 2001:4860:4860::8888; "
        "keep 192.168.1.1, version 1.2.3 and 12:30:45.",
    )
    assert doc.text == (
        "Write to <EMAIL> from <IP_ADDRESS> or <IP_ADDRESS>; keep 192.168.1.1, version 1.2.3 and 12:30:45."
    )


def test_extract_html():
    from tests.data_pipeline.corpus import to_html

    step = build_step("extract", {})
    doc = Document("p", to_html(PROSE * 3, "Budget news"), {"content_type": "text/html"})
    assert step.process(doc) is None
    assert "library should have longer opening hours" in doc.text and "<p>" not in doc.text
    assert "content_type" not in doc.metadata
    plain = Document("t", "already text")
    assert step.process(plain) is None and plain.text == "already text"
    assert step.process(Document("e", "<html><body></body></html>", {"content_type": "text/html"})) == "no_text"


def test_unknown_step_and_param_fail_with_key():
    with pytest.raises(ConfigError, match=r"steps\[2\].*unknown step 'gopher_qualty'.*did you mean 'gopher_quality'"):
        build_step("gopher_qualty", {}, "steps[2]")
    with pytest.raises(ConfigError, match=r"steps\[1\]\.c4\.min_words_per_lin"):
        build_step("c4", {"min_words_per_lin": 3}, "steps[1]")
    with pytest.raises(ConfigError, match="expected int"):
        build_step("gopher_quality", {"min_doc_words": "many"})


def test_a_step_error_drops_the_document_not_the_run():
    from data_pipeline.steps.base import Step

    class Fragile(Step):
        name = "fragile"

        def process(self, doc):
            if "boom" in doc.text:
                raise ValueError("cannot handle this one")
            return None

    step = Fragile()
    drops = []
    step.on_drop = lambda doc, name, reason, extra: drops.append((doc.id, reason, extra["detail"]))
    kept = [d.id for d in step.run([Document("a", "fine"), Document("b", "boom"), Document("c", "fine too")])]
    assert kept == ["a", "c"]
    assert drops == [("b", "error_ValueError", "cannot handle this one")]
    assert step.stats.dropped == {"error_ValueError": 1}
