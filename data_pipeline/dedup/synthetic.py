"""Synthetic corpora with planted near-duplicate families, for tests and benchmarks/dedup.py.

Every family has a base document of random words from a fixed vocabulary and variants made by
substituting a fraction `edit_rate` of the base's word positions; with word 5-grams a variant
shares about (1 - e)^5 of the base's shingles, so e = 0.01 gives Jaccard ~0.90 and e = 0.08 about
0.49. Unrelated documents share essentially no 5-gram. Generation is deterministic in `seed`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np


@dataclass
class Planted:
    doc_id: str
    family: str
    edit_rate: float


def _vocab(size: int, rng: np.random.Generator) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(3, 10, size)
    return sorted({"".join(rng.choice(letters, n)) for n in lengths})


def generate(
    num_docs: int,
    family_fraction: float = 0.2,
    family_size: tuple[int, int] = (2, 6),
    edit_rates: tuple[float, ...] = (0.0, 0.01, 0.02),
    words: tuple[int, int] = (80, 200),
    seed: int = 0,
    vocab_size: int = 20000,
) -> Iterator[tuple[dict, Planted | None]]:
    """Yield ({"id", "text"}, Planted or None) in corpus order; families are interleaved."""
    rng = np.random.default_rng(seed)
    vocab = np.array(_vocab(vocab_size, rng), dtype=object)
    made = 0
    fam = 0
    while made < num_docs:
        length = int(rng.integers(*words))
        base = rng.integers(0, len(vocab), length)
        if rng.random() < family_fraction:
            size = int(rng.integers(family_size[0], family_size[1] + 1))
            for v in range(min(size, num_docs - made)):
                rate = 0.0 if v == 0 else float(edit_rates[int(rng.integers(len(edit_rates)))])
                toks = base.copy()
                pos = rng.random(length) < rate
                toks[pos] = rng.integers(0, len(vocab), int(pos.sum()))
                doc_id = f"f{fam}-v{v}"
                yield {"id": doc_id, "text": " ".join(vocab[toks])}, Planted(doc_id, f"f{fam}", rate)
                made += 1
            fam += 1
        else:
            yield {"id": f"u{made}", "text": " ".join(vocab[base])}, None
            made += 1


def write_corpus(path: str | Path, num_docs: int, docs_per_file: int = 100_000, **kw) -> list[Planted]:
    """Write the corpus as JSONL files under `path`; returns the planted family members."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    planted: list[Planted] = []
    out = None
    for i, (rec, plant) in enumerate(generate(num_docs, **kw)):
        if i % docs_per_file == 0:
            if out:
                out.close()
            out = open(path / f"synthetic-{i // docs_per_file:05d}.jsonl", "w", encoding="utf-8")
        out.write(json.dumps(rec) + "\n")
        if plant:
            planted.append(plant)
    if out:
        out.close()
    return planted
