"""paragraph_dedup and sentence_dedup: earlier documents keep their text, later ones lose the repeats;
and the new second-layer steps chained in a recipe give the same bytes for --workers 1 and 2."""

from __future__ import annotations

import json

import pytest

from data_pipeline.document import Document
from data_pipeline.pipeline import load_recipe, run_recipe
from data_pipeline.steps import span_dedup
from data_pipeline.steps.span_dedup import split_sentences
from tests.data_pipeline.corpus import real_docs
from tests.data_pipeline.stage_helpers import run_stage
from tests.data_pipeline.test_pipeline import (
    JSONL,
    check_funnel,
    read_rejected,
    tree_bytes,
)


def _lines(tag: str, n: int, words: int = 12) -> list[str]:
    return [" ".join(f"{tag}{i}w{j}" for j in range(words)) for i in range(n)]


def test_paragraph_dedup_keeps_first_occurrence(tmp_path):
    shared, own_b, own_c = _lines("s", 3), _lines("b", 6), _lines("c", 2)
    a = Document("a", "\n".join(shared + [shared[0]] + ["", "  "] + _lines("a", 3)))  # repeat inside a: kept
    b = Document("b", "\n".join(own_b[:3] + ["  " + shared[1].upper() + " "] + own_b[3:] + [shared[2]]))
    c = Document("c", "\n".join(shared + own_c))  # loses 3 lines, 24 words left < 50: dropped
    d = Document("d", "\n".join(_lines("d", 2)))  # short but untouched: stays
    kept, stats, dropped = run_stage("paragraph_dedup", {}, [[a, b], [c, d]], tmp_path / "w")
    by_id = {doc.id: doc.text for shard in kept for doc in shard}
    assert by_id["a"] == a.text
    assert by_id["b"].split("\n") == own_b[:3] + ["  " + shared[1].upper() + " "] + own_b[3:]  # case counts
    assert dropped == {"c": "short_after_dedup"} and by_id["d"] == d.text
    assert stats["edits"] == {"lines_removed": 4}


def test_earlier_is_input_order_for_any_range_count(tmp_path, monkeypatch):
    docs = [Document(d.id, d.text) for d in real_docs()[:120]]
    docs += [Document(f"copy{i}", docs[i].text + "\n" + "\n".join(_lines(f"u{i}", 6))) for i in range(0, 40, 4)]
    shards = [docs[i : i + 30] for i in range(0, len(docs), 30)]
    ref = run_stage("paragraph_dedup", {"min_doc_words": 0}, shards, tmp_path / "one")
    monkeypatch.setattr(span_dedup, "_BYTES_PER_UNIT", 2**19)  # forces ~100 hash ranges in the reduce
    many = run_stage("paragraph_dedup", {"min_doc_words": 0, "memory_mb": 16}, shards, tmp_path / "many")
    texts = [[d.text for d in s] for s in ref[0]]
    assert texts == [[d.text for d in s] for s in many[0]]
    assert ref[1]["edits"] == many[1]["edits"] and ref[1]["edits"]["lines_removed"] > 10 * 3
    copies = {d.id: d.text for s in ref[0] for d in s if d.id.startswith("copy")}
    assert all(t.split("\n") == _lines(f"u{k[4:]}", 6) for k, t in copies.items())


def test_sentence_dedup_three_sentence_spans(tmp_path):
    s = [f"Sentence number {i} talks about topic {i} at some length." for i in range(12)]
    first = Document("first", " ".join(s[:8]))
    later = Document("later", "Intro words here. " + " ".join(s[2:5]).upper() + "\nOutro words there. " * 20)
    two_only = Document("two", "Other text. " + " ".join(s[5:7]) + " Closing remark.")
    kept, stats, dropped = run_stage(
        "sentence_dedup", {"min_doc_words": 0}, [[first], [later, two_only]], tmp_path / "w"
    )
    by_id = {d.id: d.text for shard in kept for d in shard}
    assert by_id["first"] == first.text and by_id["two"] == two_only.text
    assert by_id["later"].startswith("Intro words here. Outro words there.") and "NUMBER" not in by_id["later"]
    assert stats["edits"] == {"sentences_removed": 3} and not dropped


def test_sentence_split_covers_text():
    text = 'He said "Stop!" Then left.\nNew line here... And Dr. Who? Yes。次の文。 end'
    pieces = split_sentences(text)
    assert "".join(pieces) == text and len(pieces) >= 6


@pytest.mark.parametrize("key,value", [("min_doc_words", -1), ("memory_mb", 1)])
def test_bad_params_name_the_key(key, value):
    from data_pipeline.steps.base import build_step
    from framework.configtree import ConfigError

    with pytest.raises(ConfigError, match=f"paragraph_dedup.{key}"):
        build_step("paragraph_dedup", {key: value})
    with pytest.raises(ConfigError, match="sentence_dedup.span"):
        build_step("sentence_dedup", {"span": 0})


def test_second_layer_recipe_workers_identical(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    docs = real_docs()[:160]
    question = " ".join(docs[7].text.split()[5:25])
    (tmp_path / "bench.jsonl").write_text(json.dumps({"question": question, "choices": ["x"]}) + "\n")
    for s in range(4):
        recs = [
            {"id": d.id, "text": d.text, "url": f"https://site{s}.example/{i}"}
            for i, d in enumerate(docs[s * 40 : (s + 1) * 40])
        ]
        recs.append({"id": f"adult{s}", "text": docs[0].text, "url": "https://www.xvideos.com/v"})
        recs.append({"id": f"copy{s}", "text": docs[1].text + "\n" + docs[2].text, "url": ""})
        (inp / f"s{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    steps = (
        "steps=[url_filter, paragraph_dedup, sentence_dedup, "
        f"{{decontaminate: {{eval_files: [{tmp_path / 'bench.jsonl'}], mode: spans}}}}]"
    )
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        stats = run_recipe(
            load_recipe(JSONL, [steps, f"input={inp}", f"output={out}", "shard_bytes=1"]), workers=workers
        )
        outs.append(tree_bytes(out))
    check_funnel(stats)
    by_name = {s["name"]: s for s in stats["steps"]}
    assert by_name["url_filter"]["dropped"] == {"url_domain_adult": 4}
    assert by_name["paragraph_dedup"]["edits"]["lines_removed"] >= 3 * 2
    assert stats["contamination"] == {"bench": 1}
    assert by_name["decontaminate"]["edits"] == {"spans_cut": 1}
    strip = {k: v for k, v in outs[0].items() if k not in ("stats.json", "report.html")}
    assert strip == {k: v for k, v in outs[1].items() if k not in ("stats.json", "report.html")}
    report = (tmp_path / "w2" / "report.html").read_text()
    assert "Benchmark contamination" in report and "url_domain_adult" in report and "sentence_dedup" in report
    assert {r["reason"] for r in read_rejected(tmp_path / "w1")} >= {"url_domain_adult", "short_after_dedup"}
