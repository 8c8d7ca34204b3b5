"""url_filter: domains (and their subdomains), full URLs, banned words and sub-words, allow list."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_pipeline.document import Document
from data_pipeline.steps.base import build_step
from framework.configtree import ConfigError


def _decide(step, url):
    doc = Document("d", "some text", {"url": url} if url is not None else {})
    ok, reason = step.keep(doc)
    return "keep" if ok else reason


@pytest.fixture
def lists(tmp_path):
    (tmp_path / "spam.txt").write_text("# spam domains\nBad.COM\n*.evil.org  # wildcard form\n\n")
    (tmp_path / "pages.txt").write_text("https://www.news.example/2020/scandal.html\n")
    (tmp_path / "words.txt").write_text("casino\nxxx\n")
    (tmp_path / "subwords.txt").write_text("porn\nsexcam\n")
    (tmp_path / "soft.txt").write_text("hot\ngirls\ncams\n")
    (tmp_path / "allow.txt").write_text("good.bad.com\n")
    ut1 = tmp_path / "ut1"
    (ut1 / "gambling").mkdir(parents=True)
    (ut1 / "gambling" / "domains").write_text("bets.net\n")
    (ut1 / "gambling" / "urls").write_text("example.org/poker\n")
    return tmp_path


def test_rules_must_block_and_must_pass(lists):
    t = lists
    step = build_step(
        "url_filter",
        {
            "block_domains": [str(t / "spam.txt"), str(t / "ut1")],
            "block_urls": [str(t / "pages.txt"), str(t / "ut1")],
            "banned_words": [str(t / "words.txt")],
            "banned_subwords": [str(t / "subwords.txt")],
            "soft_banned_words": [str(t / "soft.txt")],
            "allow_domains": [str(t / "allow.txt")],
        },
    )
    must_block = {
        "http://bad.com/": "url_domain_spam",
        "https://WWW.BAD.COM/page?q=1": "url_domain_spam",  # subdomain, any case
        "https://a.b.bad.com:8080/x": "url_domain_spam",
        "http://x.evil.org/": "url_domain_spam",
        "https://shop.bets.net/": "url_domain_gambling",  # UT1 folder: list named after the category
        "http://news.example/2020/scandal.html/": "url_url_pages",  # scheme, www. and trailing / ignored
        "HTTPS://WWW.NEWS.EXAMPLE/2020/Scandal.html#top": "url_url_pages",
        "https://example.org/poker": "url_url_gambling",
        "https://site.com/best-casino-games": "url_word_words",  # whole word after splitting on non-alphanumerics
        "https://site.com/XXX/1": "url_word_words",
        "https://freeporn.example/": "url_subword_subwords",  # sub-word inside another word
        "https://example.net/live-sex-cam": "url_subword_subwords",  # matched with non-alphanumerics removed
        "https://example.net/Hot-GIRLS": "url_soft_soft",  # two soft words
    }
    must_pass = [
        "https://notbad.com/",
        "https://bad.com.example.org/",  # not a parent domain
        "https://good.bad.com/page",  # allow list wins over the block list
        "https://site.com/casinos-history",
        "https://example.org/pokerface",
        "https://www.sussex.ac.uk/xxxl-sizes",  # words inside words are not banned words
        "https://example.net/hot-dogs/hot",  # one soft word (twice) is not enough
        "",
        None,
        "http://[::1/broken",  # no url, or no parsable host: passes
    ]
    for url, reason in must_block.items():
        assert _decide(step, url) == reason, url
    for url in must_pass:
        assert _decide(step, url) == "keep", url


def test_default_lists_ship_with_the_project():
    step = build_step("url_filter", {})
    assert _decide(step, "https://de.pornhub.com/view") == "url_domain_adult"
    assert _decide(step, "https://blog.example.com/hentai-gallery") == "url_word_banned_words"
    assert _decide(step, "https://en.wikipedia.org/wiki/Sussex") == "keep"


def test_missing_list_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"url_filter\.block_domains\[1\].*not found"):
        build_step("url_filter", {"block_domains": [str(tmp_path), str(tmp_path / "nope.txt")]})
    with pytest.raises(ConfigError, match=r"url_filter\.banned_words\[0\]"):
        build_step("url_filter", {"banned_words": [str(tmp_path)]})  # a folder is not a word list


def test_fineweb_like_recipe_runs_every_step(tmp_path, monkeypatch):
    """The shipped recipe on a small WARC: a block-listed page, a page quoting a sample question."""
    import json

    from data_pipeline.pipeline import load_recipe, run_recipe
    from tests.data_pipeline.corpus import good_prose, to_html, write_warc

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)  # the recipe's list paths are relative to the repo root
    prose = good_prose()[:12]
    question = json.loads((root / "configs/data/decontamination/sample_questions.jsonl").read_text().splitlines()[2])[
        "question"
    ]
    pages = [(f"https://blog{i}.example.org/post", to_html(t, f"post {i}")) for i, t in enumerate(prose[:10])]
    pages.append(("https://www.xvideos.com/page", to_html(prose[10], "adult")))
    # Plain English prose: the recipe decides as DataTrove does (compat: datatrove), and DataTrove's
    # Gopher quality drops most docstring pages (their punctuation tokens count as words).
    quiz = (
        "The committee met on Tuesday to discuss the budget for the coming year. Members agreed that the "
        "library should have longer opening hours, and that the park needs new benches. The mayor said that "
        "the town would look for money to pay for both projects. A teacher asked whether the school could use "
        "the hall in the evenings, and the members said yes. The meeting ended with a vote on the date of the "
        "summer fair, which will be held in the first week of July."
    )
    pages.append(("https://quiz.example.net/q", to_html(quiz + "\n\nQuiz time. " + question + "\n\n", "quiz")))
    warc = write_warc(tmp_path / "crawl.warc.gz", pages)
    recipe = load_recipe(root / "configs/data/fineweb_like.yaml", [f"input={warc}", f"output={tmp_path / 'out'}"])
    stats = run_recipe(recipe)
    names = [s["name"] for s in stats["steps"]]
    assert names == [
        "read",
        "url_filter",
        "extract",
        "language",
        "gopher_repetition",
        "gopher_quality",
        "c4",
        "fineweb",
        "minhash_dedup",
        "paragraph_dedup",
        "decontaminate",
        "pii",
    ]
    by_name = {s["name"]: s for s in stats["steps"]}
    assert by_name["url_filter"]["dropped"] == {"url_domain_adult": 1}
    assert stats["contamination"] == {"sample_questions": 1}
    report = (tmp_path / "out" / "report.html").read_text()
    assert all(f"<td>{n}</td>" in report for n in names)
