"""Offline evaluation tasks built deterministically from documents: a multiple-choice word-order
task and a last-word cloze task, written as lm-evaluation-harness task YAMLs over local JSONL.

    python -m data_pipeline.eval_tasks --output configs/eval            # from the sample corpus
    python -m data_pipeline.eval_tasks --input docs.jsonl --output my_tasks --examples 1000

`anvil_mc` (multiple choice, 4 options): the first words of a prose sentence, then its true ending
against three endings with the same words in another order. A model that learned word order picks
the real one; chance is 25%. `anvil_cloze` (LAMBADA-style): a sentence without its last word; acc
is the share of last words the model predicts greedily, plus the words' perplexity.

Sentences come from every document in order (the sample corpus's Python standard-library
docstrings by default: the same on every installation of one Python version); the choice order and
the distractors are seeded by the document id, so a rebuild writes the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Iterable, Iterator

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"^[A-Za-z][a-z]*[,;]?$")
_LAST = re.compile(r"^[a-z]{4,}$")

MC_YAML = """\
# Word-order multiple choice built from {source} by `python -m data_pipeline.eval_tasks`.
# Chance: acc 0.25. Data files are relative to this folder.
task: anvil_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: anvil_mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: choices
doc_to_target: gold
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

CLOZE_YAML = """\
# Last-word cloze (LAMBADA-style) built from {source} by `python -m data_pipeline.eval_tasks`.
# Data files are relative to this folder.
task: anvil_cloze
dataset_path: json
dataset_kwargs:
  data_files:
    test: anvil_cloze.jsonl
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: " {{{{target}}}}"
target_delimiter: ""
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def prose_sentences(text: str) -> Iterator[list[str]]:
    """Sentences of 10-40 plain words (letters, optional trailing comma) ending in a full stop."""
    for para in re.split(r"\n\s*\n", text):
        if re.search(r"[>{}\[\]()=`|*#:]", para):
            continue  # code, tables, markup, signatures
        for sent in _SENTENCE.split(" ".join(para.split())):
            if not sent.endswith("."):
                continue
            words = sent[:-1].split()
            if 10 <= len(words) <= 40 and all(_WORD.match(w) for w in words):
                yield words


def _rng(doc_id: str, i: int) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"{doc_id}:{i}".encode()).digest()[:8], "big"))


def mc_example(words: list[str], rng: random.Random) -> dict | None:
    split = len(words) - min(8, max(4, len(words) // 3))
    head, tail = words[:split], words[split:]
    endings = {" ".join(tail)}
    options = [" ".join(tail) + "."]
    for _ in range(50):
        perm = tail[:]
        rng.shuffle(perm)
        ending = " ".join(perm)
        if ending not in endings:
            endings.add(ending)
            options.append(ending + ".")
        if len(options) == 4:
            break
    if len(options) < 4:
        return None
    order = list(range(4))
    rng.shuffle(order)
    return {"context": " ".join(head), "choices": [options[j] for j in order], "gold": order.index(0)}


def cloze_example(words: list[str]) -> dict | None:
    last = words[-1]
    if not _LAST.match(last):
        return None
    return {"context": " ".join(words[:-1]), "target": last}


def build_examples(docs: Iterable[tuple[str, str]], examples: int) -> tuple[list[dict], list[dict]]:
    """(id, text) documents -> up to `examples` MC and cloze examples, one sentence per document
    and task, in document order."""
    mc: list[dict] = []
    cloze: list[dict] = []
    for doc_id, text in docs:
        sentences = list(prose_sentences(text))
        if len(mc) < examples:
            for i, words in enumerate(sentences):
                ex = mc_example(words, _rng(doc_id, i))
                if ex:
                    mc.append({"id": f"{doc_id}#{i}", **ex})
                    break
        if len(cloze) < examples:
            for i, words in enumerate(reversed(sentences)):
                ex = cloze_example(words)
                if ex:
                    cloze.append({"id": f"{doc_id}#-{i + 1}", **ex})
                    break
        if len(mc) >= examples and len(cloze) >= examples:
            break
    return mc, cloze


def write_tasks(out: str | Path, mc: list[dict], cloze: list[dict], source: str) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows, template in (("anvil_mc", mc, MC_YAML), ("anvil_cloze", cloze, CLOZE_YAML)):
        with open(out / f"{name}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        (out / f"{name}.yaml").write_text(template.format(source=source))


def _read_jsonl(paths: list[str]) -> Iterator[tuple[str, str]]:
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    yield str(row.get("id", f"{path}:{n}")), row["text"]
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    print(f"{path}:{n}: skipped (expected a JSON object with a 'text' field)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_pipeline.eval_tasks", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", nargs="*", default=None, help="JSONL documents (default: the sample corpus)")
    p.add_argument("--output", required=True, help="folder for the task YAMLs and their JSONL data")
    p.add_argument("--examples", type=int, default=500, help="examples per task (default 500)")
    args = p.parse_args(argv)
    if args.examples <= 0:
        p.error("--examples must be positive")
    if args.input:
        docs, source = _read_jsonl(args.input), ", ".join(args.input)
    else:
        from data_pipeline.sample import iter_sample_documents

        docs = ((d.id, d.text) for d in iter_sample_documents() if d.id.startswith("stdlib:"))
        source = "the sample corpus's Python standard-library docstrings"
    mc, cloze = build_examples(docs, args.examples)
    write_tasks(args.output, mc, cloze, source)
    print(f"wrote anvil_mc ({len(mc)} examples) and anvil_cloze ({len(cloze)} examples) to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
