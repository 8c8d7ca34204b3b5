"""benchmarks/datatrove_compat.py and benchmarks/curation_steps.py: the rows judge the issue's targets
from the run's own numbers, agreement maps Anvil's reasons onto DataTrove's, a missing DataTrove or
missing real inputs is labelled (sample corpus, "not measured") while Anvil is still measured."""

from __future__ import annotations

import json
import random
import sys

from benchmarks import curation_steps as cs
from benchmarks import datatrove_compat as dc


def chain(wall_s, decisions=None):
    return {
        "process_wall_s": wall_s,
        "process_walls_s": [wall_s],
        "cpu_s": wall_s / 2,
        "wall_s": wall_s / 2,
        "decisions": decisions or [],
    }


def test_agreement_maps_anvil_reasons_to_datatrove_names():
    dt = [None, ["gopher_quality", "gopher_short_doc"], ["c4", "c4_lorem_ipsum"], None]
    same = [None, ["gopher_quality", "short_doc"], ["c4", "c4_lorem_ipsum"], None]
    assert dc.agreement(dt, same)["keep_drop_and_reason"] == 1.0
    other_reason = [None, ["gopher_quality", "not_enough_stop_words"], ["c4", "c4_lorem_ipsum"], ["fineweb", "x"]]
    a = dc.agreement(dt, other_reason)
    assert a["keep_drop"] == 0.75 and a["keep_drop_and_reason"] == 0.5
    assert a["kept"] == {"anvil": 1, "datatrove": 2}
    assert a["disagreements"][0] == [1, "gopher_quality:gopher_short_doc", "gopher_quality:gopher_enough_stop_words"]


def test_speed_rows_meet_the_10x_target_only_at_10x_whole_process():
    runs = {"chain": {"datatrove": chain(100.0), "compat": chain(10.1), "default": chain(10.0)}}
    compat, default = dc.speed_rows(runs, 1500, None)
    assert compat["quantity"] == default["quantity"] == "wall s, whole process"
    assert compat["met"] is False and compat["ratio"] == "9.9x" and "compat: datatrove" in compat["what"]
    assert default["met"] is True and default["peer"] == "DataTrove 0.10: 100.0 s"


def test_rows_without_datatrove_say_why_and_judge_nothing():
    runs = {"chain": {"compat": chain(10.0), "default": chain(5.0)}}
    rows = [*dc.speed_rows(runs, 1500, dc.PEERS_MISSING), dc.agreement_row({}, dc.PEERS_MISSING)]
    assert all(r["met"] is None and r["peer"] == dc.PEERS_MISSING for r in rows)
    assert rows[0]["anvil"] == "10.0 s" and rows[2]["anvil"] == "not measured"


def test_agreement_row_is_judged_on_the_lowest_of_chain_and_single_filters():
    def ag(x):
        return {"keep_drop": x, "keep_drop_and_reason": x, "kept": {"anvil": 3, "datatrove": 3}}

    agree = {
        "compat": {dc.CHAIN: ag(1.0), **{f: ag(1.0) for f in dc.FILTERS}},
        "default": {dc.CHAIN: ag(0.35), **{f: ag(0.5) for f in dc.FILTERS}},
    }
    assert dc.agreement_row(agree, None)["met"] is True
    agree["compat"]["c4"] = ag(0.9899)
    r = dc.agreement_row(agree, None)
    assert r["met"] is False and "lowest c4 98.99%" in r["anvil"] and "default agrees 35.0%" in r["peer"]


def test_without_real_inputs_the_sample_corpus_is_used_and_labelled(tmp_path, monkeypatch):
    monkeypatch.setenv("ANVIL_BENCH_REAL_ROOT", str(tmp_path / "nothing-installed"))
    monkeypatch.setattr(dc, "CACHE", tmp_path / "cache")
    assert "not found" in dc.real_inputs_missing()
    path, label, real = dc.load_corpus(12)
    assert not real and label.startswith(dc.FALLBACK) and "12 documents" in label
    docs = [json.loads(line) for line in open(path)]
    assert len(docs) == 12 and all(d["source"] == "sample" and d["text"] for d in docs)


def test_without_datatrove_anvil_is_still_measured_in_both_modes(tmp_path, monkeypatch):
    corpus = tmp_path / "docs.jsonl"
    words = "the cat sat on the mat and looked at the birds in the garden while it rained".split()
    rng = random.Random(1)
    texts = ["short page", *(" ".join(rng.choice(words) for _ in range(120)) + "." for _ in range(3))]
    corpus.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    monkeypatch.setattr(dc, "PEERS", tmp_path / "no-venv-peers")
    runs = dc.measure(corpus, tmp_path, repeats=1)
    assert runs["peer_error"] == dc.PEERS_MISSING and set(runs["chain"]) == {"compat", "default"}
    for mode in ("compat", "default"):
        decisions = runs["chain"][mode]["decisions"]
        assert len(decisions) == 4 and decisions[0] is not None and decisions[0][0] in dc.FILTERS
        assert runs["chain"][mode]["process_wall_s"] > 0
    assert runs["each"] == {} and dc.agreements(runs) == {}


def test_anvil_each_run_records_every_filter_on_every_document(tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"text": "tiny"}) + "\n")
    dst = tmp_path / "each.json"
    dc.anvil_main("each", "compat", str(corpus), str(dst))
    each = json.loads(dst.read_text())["decisions"]
    assert set(each) == set(dc.FILTERS) and all(len(v) == 1 for v in each.values())
    assert each["gopher_quality"] == [["gopher_quality", "short_doc"]]


def test_planted_urls_every_tenth_on_a_listed_domain(tmp_path):
    listed = tmp_path / "domains"
    listed.write_text("bad.example\n")
    urls = cs.plant_urls(["https://docs.python.org/a", "https://djangoproject.com/b"], 40, listed, random.Random(0))
    assert urls[9] == "https://bad.example/page/9.html" and urls[19] == "https://www.bad.example/page/19.html"
    assert sum("bad.example" in u for u in urls) == 4 and urls[0] == "https://docs.python.org/a"
    assert cs.text_urls(["see https://example.org/x. and (http://a.b/c)"]) == ["https://example.org/x", "http://a.b/c"]


def test_step_rows_name_their_quantity_and_say_what_was_not_measured():
    work = {"texts": ["a"] * 4, "dedup_texts": ["a"] * 6, "eval": [{}] * 3}
    anvil = {"kept": [True, True, False, True], "cpu_s": 0.5, "process_wall_s": 2.0}
    results = {
        "decontaminate": {"anvil": anvil},
        "sentence_dedup": {"anvil": {**anvil, "kept": [True] * 6}, "datatrove": {"error": "its run failed (x)"}},
    }
    url, decont, sent = cs.step_rows(results, work, "its block lists are DataTrove's own", dc.PEERS_MISSING)
    assert url["anvil"].startswith("not measured: its block lists") and url["met"] is None
    assert (
        decont["anvil"] == "2/s"
        and decont["peer"] == dc.PEERS_MISSING
        and "wall-s, whole process" in decont["quantity"]
    )
    assert sent["peer"] == "DataTrove not measured: its run failed (x)"
    results["decontaminate"]["datatrove"] = {"kept": [True, False, False, True], "process_wall_s": 20.0}
    decont = cs.step_rows(results, work, None, None)[1]
    assert decont["ratio"] == "10.0x" and "agreement 75.0%" in decont["what"]


def fake_sample(n):
    from data_pipeline.document import Document

    words = "a sample sentence about the parser and its options that has more than twelve words in it".split()
    for i in range(min(n, 40)):
        rng = random.Random(i)
        yield Document(f"s{i}", " ".join(" ".join(rng.sample(words, 15)) + "." for _ in range(8)))


def test_curation_steps_without_datatrove_or_real_inputs_measures_anvil_and_labels_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ANVIL_BENCH_REAL_ROOT", str(tmp_path / "nothing-installed"))
    monkeypatch.setattr(dc, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(dc, "PEERS", tmp_path / "no-venv-peers")
    monkeypatch.setattr(dc, "DEFAULT_DOCS", 8)
    monkeypatch.setattr("data_pipeline.sample.iter_sample_documents", fake_sample)  # the real one reads the stdlib
    written = {}
    monkeypatch.setattr(
        "benchmarks.common.Recorder.write",
        lambda self, record, rows, label: written.update(r=record, rows=rows, label=label),
    )
    monkeypatch.setattr(sys, "argv", ["curation_steps.py", "--docs", "6"])
    cs.main()
    assert dc.FALLBACK in written["label"] and written["label"].startswith("6 documents")
    url, decont, sent = written["rows"]
    assert (
        url["anvil"]
        == "not measured: its block lists are DataTrove's own (benchmarks/.venv-peers missing; make bench creates it)"
    )
    assert decont["peer"] == sent["peer"] == dc.PEERS_MISSING and decont["anvil"].endswith("/s")
    steps = written["r"]["steps"]
    assert set(steps) == {"decontaminate", "sentence_dedup", "paragraph_dedup"}
    assert steps["sentence_dedup"]["anvil"]["docs"] == 206 and "datatrove" not in steps["decontaminate"]
