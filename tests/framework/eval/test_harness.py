"""The lm-evaluation-harness adapter and task plumbing, on a tiny local model (no training).

Checkpoint-vs-export parity and 1-vs-2 ranks: tests/framework/interop/test_hf_export.py; in-loop
evaluation: tests/framework/training/test_downstream.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data_pipeline.eval_tasks import build_examples, main as build_tasks_main, prose_sentences
from framework.eval.harness import TaskError, flat_metrics, resolve_tasks, run_tasks
from framework.eval.lm_adapter import _in_document_order, from_scorer
from framework.eval.perplexity import load_scorer
from tests.framework.interop.hf_fixtures import tiny_llama_folder

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "configs" / "eval"

GEN_YAML = """\
task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: gen.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{context}}"
doc_to_target: "{{target}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return load_scorer(tiny_llama_folder(tmp_path_factory.mktemp("harness") / "lm", seed=5))


def test_generate_until_is_greedy_decoding(scorer, tmp_path):
    contexts = ["The module provides", "Return the sum of"]
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps({"context": c, "target": " x"}) + "\n" for c in contexts))
    (tmp_path / "gen.yaml").write_text(GEN_YAML)
    out = run_tasks(from_scorer(scorer), ["tiny_gen"], [str(tmp_path)], log_samples=True)
    got = [s["resps"][0][0] for s in sorted(out["samples"]["tiny_gen"], key=lambda s: s["doc_id"])]
    for context, text in zip(contexts, got):
        ids = scorer.encode(context)
        for _ in range(6):  # the reference: argmax of the transformers model, one token at a time
            with torch.no_grad():
                nxt = int(scorer.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == scorer.eos_id:
                break
            ids.append(nxt)
        expected = scorer.tokenizer.decode(ids[len(scorer.encode(context)) :]).split("\n")[0]
        assert text == expected
    assert "exact_match,none" in out["results"]["tiny_gen"]


def test_missing_task_data_names_task_and_path(tmp_path):
    (tmp_path / "t.yaml").write_text(GEN_YAML.replace("gen.jsonl", "missing/gen.jsonl"))
    with pytest.raises(TaskError, match=r"task tiny_gen: data file .*missing/gen.jsonl not found .*t.yaml"):
        resolve_tasks(["tiny_gen"], [str(tmp_path)])
    with pytest.raises(TaskError, match="include path .*nope: no such folder"):
        resolve_tasks(["tiny_gen"], [str(tmp_path / "nope")])


def test_shipped_tasks_are_well_formed_and_rebuild_deterministically(tmp_path):
    specs, _ = resolve_tasks(["anvil_mc", "anvil_cloze"], [str(SHIPPED)])
    assert all(isinstance(s, dict) and Path(s["dataset_kwargs"]["data_files"]["test"]).is_absolute() for s in specs)
    mc = [json.loads(line) for line in (SHIPPED / "anvil_mc.jsonl").open()]
    assert len(mc) >= 400
    for ex in mc:
        assert len(ex["choices"]) == 4 == len(set(ex["choices"])) and 0 <= ex["gold"] < 4
        assert sorted(ex["choices"][0].rstrip(".").split()) == sorted(ex["choices"][ex["gold"]].rstrip(".").split())
    cloze = [json.loads(line) for line in (SHIPPED / "anvil_cloze.jsonl").open()]
    assert len(cloze) >= 400 and all(ex["target"].isalpha() and ex["context"] for ex in cloze)
    docs = tmp_path / "docs.jsonl"
    text = (
        "Return a new list containing all items from the iterable in ascending order, as the sort "
        "function would do for the caller. This paragraph is plain prose that the builder accepts "
        "as a sentence of the right length.\n\nx = f(y)  # code is skipped."
    )
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": text}) + "\n" for i in range(3)) + "not json\n")
    for out in ("a", "b"):
        assert build_tasks_main(["--input", str(docs), "--output", str(tmp_path / out), "--examples", "5"]) == 0
    for name in ("anvil_mc.jsonl", "anvil_cloze.jsonl", "anvil_mc.yaml"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len((tmp_path / "a" / "anvil_mc.jsonl").read_text().splitlines()) == 3
    assert not list(prose_sentences("x = f(y)  # code is skipped. Another one here."))
    assert build_examples([], 5) == ([], [])


def test_ranks_interleaved_back_into_document_order():
    # 5 documents over 2 ranks: rank 0 has 0, 2, 4; rank 1 has 1, 3
    per_rank = [{"t": {("acc", "none"): [0, 2, 4]}}, {"t": {("acc", "none"): [1, 3]}}]
    merged = _in_document_order(per_rank)
    assert merged[0]["t"][("acc", "none")] == [0, 1, 2, 3, 4] and merged[1]["t"][("acc", "none")] == []
    assert _in_document_order(["a", "b"]) == ["a", "b"]  # anything else passes through


def test_flat_metrics_names():
    results = {
        "results": {
            "anvil_mc": {"alias": "anvil_mc", "sample_len": 10, "acc,none": 0.5, "acc_stderr,none": 0.1},
            "gsm": {"exact_match,strict-match": 0.25},
        }
    }
    assert flat_metrics(results) == {
        "eval/anvil_mc/acc": 0.5,
        "eval/anvil_mc/acc_stderr": 0.1,
        "eval/gsm/exact_match_strict-match": 0.25,
    }
