"""Benchmark decontamination: drop (or cut) text that shares an n-gram with an evaluation set.

As GPT-3 (Brown et al. 2020, appendix C) and DataTrove's n-gram decontamination: text is
normalised (lowercased; words are maximal runs of letters and digits, so punctuation, line breaks
and whitespace only separate words), and a document matching any `ngram`-word sequence (13) of an
evaluation example is contaminated. Each example is the concatenation of its `fields` (strings or
lists of strings, in the configured order; other types are skipped); examples shorter than `ngram`
words cannot match and are counted in the log.

A CorpusStage (base.py) whose reduce builds the index once, from the evaluation files rather than
the corpus: a sorted array of 64-bit n-gram hashes with a bitmask of the files each comes from
(16 bytes per distinct n-gram: MMLU's ~14k test questions are ~1M n-grams, 16 MB), plus the
evaluation vocabulary. Each shard memory-maps it. A document word outside that vocabulary cannot
be part of a match, so the per-document work is a dict lookup per word and a vectorised rolling
hash (h = h * M + word_value mod 2^64, word values from xxh3) over the windows of known words.

Evaluation sets: each `eval_files` entry is a JSONL file (one example per line; a `.json` file
holding a list of examples also works) or an lm-evaluation-harness task folder: every task YAML
in it with `dataset_path: json` and local `data_files` (a path, a list, or a split -> path(s)
mapping, relative to the YAML) contributes its files under the task's name. Nothing is downloaded;
a task whose data is not local is reported with the path it looked for.

`mode: document` drops a contaminated document (reason `decontaminate`); `mode: spans` cuts every
matched word range out (a document with no word left is dropped). Either way stats.json gains
`"contamination": {FILE_STEM: documents_matched}` and report.html lists examples per benchmark.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import xxhash
import yaml

from data_pipeline.document import Document
from data_pipeline.steps.base import EXAMPLES_PER_REASON, CorpusStage, register
from framework.configtree import ConfigError

_WORD = re.compile(r"[^\W_]+")
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd: rolling hash multiplier
_MAX_FILES = 64  # one bit per evaluation file


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def word_value(word: str) -> int:
    return (
        xxhash.xxh3_64_intdigest(word.encode("utf-8", "surrogatepass")) or 1
    )  # 0 marks "not in the evaluation vocabulary"


def ngram_hashes(values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rolling hash of every n-word window, and whether the window has only known words."""
    m = len(values) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    for k in range(n):
        h = h * _MULT + values[k : k + m]
    unknown = np.concatenate([[0], np.cumsum(values == 0)])
    return h, unknown[n:] - unknown[:m] == 0


class _TaskLoader(yaml.SafeLoader):
    """Harness task YAMLs use tags such as `!function utils.process_docs`: read them as None."""


_TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _task_files(yaml_path: Path) -> tuple[str, list[Path]] | None:
    """(task name, local data files) of one harness task YAML, or None when it reads no local JSON."""
    try:
        task = yaml.load(yaml_path.read_text(encoding="utf-8"), Loader=_TaskLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"decontaminate.eval_files: {yaml_path}: invalid YAML ({exc})") from None
    if not isinstance(task, dict) or task.get("dataset_path") not in ("json", "jsonl"):
        return None
    spec = (task.get("dataset_kwargs") or {}).get("data_files", task.get("data_files"))
    items = spec.values() if isinstance(spec, dict) else [spec]
    files = [yaml_path.parent / f for item in items for f in ([item] if isinstance(item, str) else item or [])]
    if not files:
        raise ConfigError(
            f"decontaminate.eval_files: {yaml_path}: task reads dataset_path json but names no data_files"
        )
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ConfigError(
            f"decontaminate.eval_files: task {task.get('task', yaml_path.stem)!r} ({yaml_path}): "
            f"data file not found: {missing[0]}"
        )
    return str(task.get("task") or yaml_path.stem), files


def eval_sources(entries: list[str]) -> list[tuple[str, list[Path]]]:
    """(benchmark name, files) per evaluation set: a JSONL/JSON file is one set named after its stem;
    a harness task folder gives one set per task YAML that reads local JSON files."""
    out = []
    for i, entry in enumerate(entries):
        path = Path(entry)
        if path.is_file():
            out.append((path.stem, [path]))
        elif path.is_dir():
            tasks = [t for y in sorted(path.rglob("*.yaml")) if (t := _task_files(y))]
            if not tasks:
                raise ConfigError(
                    f"config key 'decontaminate.eval_files[{i}]': {entry} is a folder with no "
                    "lm-evaluation-harness task reading local files (dataset_path: json + data_files)"
                )
            out.extend(tasks)
        else:
            raise ConfigError(f"config key 'decontaminate.eval_files[{i}]': file not found: {entry}")
    return out


def _records(path: Path):
    """(line number, record) of a JSONL file, or of a JSON file holding a list of records."""
    with open(path, encoding="utf-8") as fh:
        head = fh.read(1)
        while head.isspace():
            head = fh.read(1)
        fh.seek(0)
        if head == "[":
            try:
                records = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"decontaminate.eval_files: {path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
            yield from ((k + 1, r) for k, r in enumerate(records))
            return
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"decontaminate.eval_files: {path}:{line_no}: invalid JSON ({exc.msg})") from None


def example_texts(path: Path, fields: list[str]):
    """(line number, text) for every example of an evaluation file."""
    for line_no, rec in _records(path):
        if not isinstance(rec, dict):
            raise ConfigError(f"decontaminate.eval_files: {path}:{line_no}: expected a JSON object per example")
        parts = []
        for name in fields:
            value = rec.get(name)
            if isinstance(value, str):
                parts.append(value)
            elif isinstance(value, list):
                parts.extend(v for v in value if isinstance(v, str))
        yield line_no, " ".join(parts)


@register("decontaminate")
class Decontaminate(CorpusStage):
    @dataclass
    class Params:
        eval_files: list[str] = field(default_factory=list)  # JSONL files or lm-eval task folders
        fields: list[str] = field(  # example keys concatenated into the text to match
            default_factory=lambda: ["question", "choices", "answer"]
        )
        ngram: int = 13  # words per n-gram; a shared n-gram marks contamination
        mode: Literal["document", "spans"] = "document"  # document: drop the document; spans: cut out matched words

        def validate(self) -> None:
            if not self.eval_files:
                raise ConfigError(
                    "config key 'decontaminate.eval_files': at least one JSONL file of evaluation examples is required"
                )
            names = [name for name, _ in eval_sources(self.eval_files)]
            if len(names) > _MAX_FILES:
                raise ConfigError(
                    f"config key 'decontaminate.eval_files': at most {_MAX_FILES} evaluation sets, got {len(names)}"
                )
            if len(set(names)) != len(names):
                raise ConfigError(
                    f"config key 'decontaminate.eval_files': evaluation set names must differ (stats "
                    f"are keyed by name): {names}"
                )
            if not self.fields:
                raise ConfigError("config key 'decontaminate.fields': name at least one field")
            if self.ngram < 1:
                raise ConfigError(f"config key 'decontaminate.ngram': expected >= 1, got {self.ngram}")

    def __init__(self, params=None):
        super().__init__(params)
        self.sources = eval_sources(self.params.eval_files)
        self.stems = [name for name, _ in self.sources]
        self.stats.tallies["contamination"].update({s: 0 for s in self.stems})

    # --- the index: built once in the reduce ------------------------------------------------
    def scan(self, docs, shard: int, workdir: Path) -> None:
        pass  # the index comes from the evaluation files, not from the corpus

    def reduce(self, num_shards: int, workdir: Path) -> None:
        from framework.runtime import get_logger

        n, vocab = self.params.ngram, {}
        hashes, bits, short = [np.zeros(0, np.uint64)], [np.zeros(0, np.uint64)], 0
        for i, (_, files) in enumerate(self.sources):
            for _, text in (item for path in files for item in example_texts(path, self.params.fields)):
                words = words_of(text)
                if len(words) < n:
                    short += 1
                    continue
                values = np.array([vocab.setdefault(w, word_value(w)) for w in words], dtype=np.uint64)
                h, _ = ngram_hashes(values, n)
                hashes.append(h)
                bits.append(np.full(len(h), 1 << i, dtype=np.uint64))
                if len(hashes) > 4096:  # fold as we go: memory stays near the distinct n-grams
                    hashes, bits = _fold(hashes, bits)
        [h], [b] = _fold(hashes, bits)
        np.savez(workdir / "index.npz", hashes=h, bits=b)
        (workdir / "vocab.json").write_text(json.dumps(sorted(vocab)))
        if short:
            get_logger("data").info(
                "decontaminate: %d evaluation examples have fewer than %d words and cannot match", short, n
            )

    def prepare(self, shard: int, workdir: Path) -> None:
        index = np.load(workdir / "index.npz")
        self._hashes, self._bits = index["hashes"], index["bits"]
        self._vocab = {w: word_value(w) for w in json.loads((workdir / "vocab.json").read_text())}

    # --- per document -------------------------------------------------------------------------
    def _matches(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Start positions of matched windows and the file bits of each."""
        n = self.params.ngram
        if len(words) < n or not len(self._hashes):
            return np.zeros(0, np.int64), np.zeros(0, np.uint64)
        get = self._vocab.get
        values = np.array([get(w, 0) for w in words], dtype=np.uint64)
        h, known = ngram_hashes(values, n)
        idx = np.minimum(np.searchsorted(self._hashes, h), len(self._hashes) - 1)
        hit = known & (self._hashes[idx] == h)
        starts = np.flatnonzero(hit)
        return starts, self._bits[idx[starts]]

    def process(self, doc: Document):
        words = words_of(doc.text)
        starts, bits = self._matches(words)
        if not len(starts):
            return None
        n = self.params.ngram
        all_bits = int(np.bitwise_or.reduce(bits))
        matched = [s for i, s in enumerate(self.stems) if all_bits >> i & 1]
        first = " ".join(words[int(starts[0]) : int(starts[0]) + n])
        for stem in matched:
            self.stats.tallies["contamination"][stem] += 1
            examples = self.stats.examples.setdefault(f"contamination:{stem}", [])
            if len(examples) < EXAMPLES_PER_REASON:
                examples.append({"id": doc.id, "text": f"matched: {first}"})
        if self.params.mode == "document":
            return "decontaminate", {"benchmarks": matched, "ngram": first}
        return self._cut(doc, matched, first)

    def _cut(self, doc: Document, matched: list[str], first: str):
        """Remove every matched word range (word offsets taken from the original text)."""
        n = self.params.ngram
        spans = [m.span() for m in _WORD.finditer(doc.text)]
        starts, _ = self._matches([doc.text[a:b].lower() for a, b in spans])
        ranges: list[list[int]] = []
        for s in starts.tolist():
            if ranges and s <= ranges[-1][1]:
                ranges[-1][1] = s + n
            else:
                ranges.append([s, s + n])
        pieces, pos = [], 0
        for a, b in ranges:
            pieces.append(doc.text[pos : spans[a][0]])
            pos = spans[b - 1][1]
        pieces.append(doc.text[pos:])
        self.stats.edits["spans_cut"] += len(ranges)
        doc.text = "".join(pieces).strip()
        if not _WORD.search(doc.text):
            return "decontaminate", {"benchmarks": matched, "ngram": first}
        return None


def _fold(hashes: list[np.ndarray], bits: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Concatenate, sort and merge equal hashes (OR of their file bits)."""
    h, b = np.concatenate(hashes), np.concatenate(bits)
    order = np.argsort(h, kind="stable")
    h, b = h[order], b[order]
    if len(h):
        starts = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]]))
        h, b = h[starts], np.bitwise_or.reduceat(b, starts)
    return [h], [b]
