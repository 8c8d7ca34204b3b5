"""decontaminate: benchmark questions planted in real documents are found however they are written;
documents sharing only 12-grams stay; spans mode cuts exactly the matched words."""

from __future__ import annotations

import json

import pytest

from data_pipeline.document import Document
from framework.configtree import ConfigError
from tests.data_pipeline.corpus import real_docs
from tests.data_pipeline.stage_helpers import run_stage

QUESTIONS = [
    {
        "question": "Which of the following best explains why the temperature of a gas rises when it is "
        "compressed quickly inside an insulated cylinder?",
        "choices": ["work done on the gas", "heat from the walls", "friction", "radiation"],
        "answer": 0,
    },
    {
        "question": "A farmer plants three rows of beans and two rows of corn; how many plants does she need "
        "if every row holds twelve plants?",
        "choices": ["48", "60", "72", "36"],
        "answer": 1,
    },
    {
        "question": "In which year did the treaty that ended the war between the two northern kingdoms come "
        "into force according to the passage?",
        "choices": ["1648", "1713", "1815", "1905"],
        "answer": 2,
    },
]
TRIVIA = [
    {
        "question": "Name the river that flows through the old town centre of the city described in the "
        "travel guide above.",
        "choices": [],
        "answer": 3,
    }
]


def _eval_files(tmp_path):
    mmlu, trivia = tmp_path / "mmlu_like.jsonl", tmp_path / "trivia.jsonl"
    mmlu.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    trivia.write_text("\n" + "".join(json.dumps(q) + "\n" for q in TRIVIA))  # blank lines are skipped
    return [str(mmlu), str(trivia)]


def _plant(host: str, inserted: str) -> str:
    words = host.split(" ")
    mid = len(words) // 2
    return " ".join(words[:mid]) + " " + inserted + " " + " ".join(words[mid:])


def _cases():
    hosts = [d.text for d in real_docs() if len(d.text.split()) > 120][:12]
    q0, q1, q2, t0 = (
        QUESTIONS[0]["question"],
        QUESTIONS[1]["question"],
        QUESTIONS[2]["question"],
        TRIVIA[0]["question"],
    )
    contaminated = {
        "whole": (_plant(hosts[0], q0), "mmlu_like"),
        "case_punct": (_plant(hosts[1], q1.upper().replace(";", " --").replace("?", "!!")), "mmlu_like"),
        "split_lines": (_plant(hosts[2], q2.replace(" ", "\n", 5).replace("the two", "the   two\r\n")), "mmlu_like"),
        "question_then_choice": (
            _plant(
                hosts[3],
                "Quiz: in which year did the treaty that ended the war between the two northern kingdoms come into",
            ),
            "mmlu_like",
        ),
        "other_benchmark": (_plant(hosts[4], t0.lower()), "trivia"),
        "at_start": (q0 + "\n" + hosts[5], "mmlu_like"),
    }
    w = q0.split()
    clean = {
        "twelve_words": _plant(hosts[6], " ".join(w[:12])),
        "twelve_then_other": _plant(hosts[7], " ".join(w[:12]) + " different ending entirely"),
        "two_twelves": _plant(hosts[8], " ".join(w[:12]) + ". And " + " ".join(w[13:25])),
        "short_example_words": _plant(hosts[9], "the following best explains why"),
    } | {f"real{i}": h for i, h in enumerate(hosts[10:12])}
    return contaminated, clean


def test_planted_questions_found_twelve_grams_stay(tmp_path):
    contaminated, clean = _cases()
    docs = [Document(k, t) for k, (t, _) in contaminated.items()] + [Document(k, t) for k, t in clean.items()]
    params = {"eval_files": _eval_files(tmp_path)}
    kept, stats, dropped = run_stage("decontaminate", params, [docs[:5], docs[5:]], tmp_path / "w")
    assert dropped == {k: "decontaminate" for k in contaminated}
    assert sorted(d.id for shard in kept for d in shard) == sorted(clean)
    assert stats["tallies"]["contamination"] == {"mmlu_like": 5, "trivia": 1}
    assert stats["examples"]["contamination:trivia"][0]["id"] == "other_benchmark"


def test_spans_mode_cuts_only_the_match(tmp_path):
    host = real_docs()[0].text
    q = QUESTIONS[0]["question"]
    text = _plant(host, "Look: " + q.upper() + " Then more.")
    kept, stats, dropped = run_stage(
        "decontaminate",
        {"eval_files": _eval_files(tmp_path), "mode": "spans"},
        [[Document("a", text), Document("only", q)]],
        tmp_path / "w",
    )
    assert dropped == {"only": "decontaminate"}  # nothing left after the cut
    out = kept[0][0].text
    assert "Look: ?" in out and "Then more." in out  # the words go; surrounding text stays
    assert "COMPRESSED" not in out and len(out) == len(text) - len(q) + 1
    assert stats["edits"] == {"spans_cut": 2}
    assert stats["tallies"]["contamination"] == {"mmlu_like": 2, "trivia": 0}


def test_bad_config_and_eval_lines(tmp_path):
    from data_pipeline.steps.base import build_step

    with pytest.raises(ConfigError, match="decontaminate.eval_files"):
        build_step("decontaminate", {})
    with pytest.raises(ConfigError, match=r"decontaminate.eval_files\[0\].*not found"):
        build_step("decontaminate", {"eval_files": [str(tmp_path / "missing.jsonl")]})
    with pytest.raises(ConfigError, match="decontaminate.mode"):
        build_step("decontaminate", {"eval_files": _eval_files(tmp_path), "mode": "paragraph"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(QUESTIONS[0]) + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: invalid JSON"):
        run_stage("decontaminate", {"eval_files": [str(bad)]}, [[]], tmp_path / "w")


def test_harness_task_folder_reads_local_data_files(tmp_path):
    """An lm-evaluation-harness task folder: each task YAML with `dataset_path: json` and local
    `data_files` is one evaluation set named after the task (a JSON list works as well as JSONL)."""
    tasks = tmp_path / "tasks"
    (tasks / "data").mkdir(parents=True)
    (tasks / "data" / "test.json").write_text(json.dumps(QUESTIONS))  # a JSON list of examples
    (tasks / "data" / "dev.jsonl").write_text(json.dumps(TRIVIA[0]) + "\n")
    (tasks / "physics_qa.yaml").write_text(
        "task: physics_qa\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data/test.json\n"
        "process_docs: !function utils.process_docs\ndoc_to_text: '{{question}}'\n"
    )
    (tasks / "trivia_local.yaml").write_text(
        "task: trivia_local\ndataset_path: json\ndataset_kwargs:\n  data_files: [data/dev.jsonl]\n"
    )
    (tasks / "hub_task.yaml").write_text("task: hub_task\ndataset_path: cais/mmlu\n")  # not local: not a set
    contaminated, clean = _cases()
    docs = [Document(k, t) for k, (t, _) in contaminated.items()] + [Document(k, t) for k, t in clean.items()]
    kept, stats, dropped = run_stage("decontaminate", {"eval_files": [str(tasks)]}, [docs], tmp_path / "w")
    assert dropped == {k: "decontaminate" for k in contaminated}
    assert stats["tallies"]["contamination"] == {"physics_qa": 5, "trivia_local": 1}
    (tasks / "data" / "dev.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"task 'trivia_local' .*data file not found: .*dev.jsonl"):
        run_stage("decontaminate", {"eval_files": [str(tasks)]}, [[]], tmp_path / "w2")
