"""Corpora with planted near-duplicate families, for tests and benchmarks/dedup.py.

`generate`: every family has a base document of random words from a fixed vocabulary and
variants made by substituting a fraction `edit_rate` of the base's word positions; with word
5-grams a variant shares about (1 - e)^5 of the base's shingles, so e = 0.01 gives Jaccard ~0.90
and e = 0.08 about 0.49. Unrelated documents share essentially no 5-gram.

`plant_families`: variants of *real* documents, made by the edits near-duplicates carry on the
web (EDITS: word substitutions, insertions and deletions, reordered paragraphs, added boilerplate
headers/footers, truncations), each at several levels chosen so that the variants' Jaccard to
their base spreads across the usual 0.8 threshold; the truth is then exact Jaccard, not the level.
Both are deterministic in `seed`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

# edit -> levels: the fraction of words edited (substitute, insert_delete), of paragraphs moved
# (reorder), of boilerplate words added (boilerplate) or of words cut off the end (truncate)
EDITS = {
    "substitute": (0.01, 0.02, 0.03, 0.05),
    "insert_delete": (0.01, 0.02, 0.03, 0.05),
    "reorder": (0.05, 0.1, 0.2, 0.4),
    "boilerplate": (0.05, 0.15, 0.25, 0.4),
    "truncate": (0.05, 0.15, 0.2, 0.3),
}
BOILERPLATE = [
    "Skip to main content",
    "Home | About | Products | Blog | Contact | Careers",
    "This website uses cookies to ensure you get the best experience on our website. Learn more. Got it!",
    "Share this article: Facebook Twitter LinkedIn Email Print",
    "Subscribe to our newsletter and never miss an update. Enter your email address. Subscribe",
    "Copyright 2024 All rights reserved. Privacy Policy | Terms of Service | Cookie Settings",
    "Related posts: You may also like these articles from our editors",
    "Posted in Uncategorized | Leave a comment | Tagged news, updates, featured",
    "Sign in Register Forgot your password? Create an account to continue",
    "Advertisement. Continue reading below. Recommended for you",
    "Follow us on social media for the latest news, tips and special offers",
    "Back to top. Was this page helpful? Yes No. Send feedback",
]
MIN_WORDS = 80  # shorter documents are not used as bases
_WORDS = re.compile(r"\S+")


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


# ------------------------------------------------------------------------- edits of real documents
@dataclass
class PlantedEdit:
    doc_id: str
    base: str
    edit: str
    level: float


def _word_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _WORDS.finditer(text)]


def _substitute(text, level, rng, vocab):
    spans = [sp for sp in _word_spans(text) if rng.random() < level]
    out, last = [], 0
    for s, e in spans:
        out += [text[last:s], str(vocab[int(rng.integers(len(vocab)))])]
        last = e
    return "".join(out) + text[last:]


def _insert_delete(text, level, rng, vocab):
    out, last = [], 0
    for s, e in _word_spans(text):
        if rng.random() >= level:
            continue
        if rng.random() < 0.5:  # delete the word and the space after it
            out.append(text[last:s])
            last = e + 1 if e < len(text) and text[e] == " " else e
        else:  # insert a word before it
            out += [text[last:s], str(vocab[int(rng.integers(len(vocab)))]), " "]
            last = s
    return "".join(out) + text[last:]


def _reorder(text, level, rng, vocab):
    lines = text.split("\n")
    paras = [i for i, line in enumerate(lines) if line.strip()]
    moved = sorted(rng.choice(paras, max(2, round(level * len(paras))), replace=False).tolist())
    order = rng.permutation(moved)
    out = list(lines)
    for dst, src in zip(moved, order.tolist()):
        out[dst] = lines[src]
    return "\n".join(out)


def _boilerplate(text, level, rng, vocab):
    want = max(3, round(level * len(_word_spans(text))))
    header, footer, have = [], [], 0
    where = int(rng.integers(3))  # 0 header, 1 footer, 2 both
    while have < want:
        snippet = BOILERPLATE[int(rng.integers(len(BOILERPLATE)))]
        words = snippet.split()[: want - have]
        side = header if where == 0 or (where == 2 and rng.random() < 0.5) else footer
        side.append(" ".join(words))
        have += len(words)
    return "\n".join(header + [text] + footer)


def _truncate(text, level, rng, vocab):
    spans = _word_spans(text)
    keep = max(1, round((1 - level) * len(spans)))
    return text[: spans[keep - 1][1]]


_EDIT_FUNCS = {
    "substitute": _substitute,
    "insert_delete": _insert_delete,
    "reorder": _reorder,
    "boilerplate": _boilerplate,
    "truncate": _truncate,
}


def edit_text(text: str, edit: str, level: float, rng: np.random.Generator, vocab) -> str:
    """`text` with one planted edit (EDITS); `vocab`: words that substitutions and insertions use."""
    return _EDIT_FUNCS[edit](text, level, rng, vocab)


def plant_families(
    docs: list[dict], num_variants: int, seed: int = 0, edits: dict = EDITS, max_variants: int = 3
) -> tuple[list[dict], list[PlantedEdit]]:
    """`docs` ({"id", "text"}, real text) plus `num_variants` edited copies of some of them, all
    in a seeded shuffled order. Bases are documents of >= MIN_WORDS words (reorder: >= 4
    paragraphs); each base gets 1..max_variants variants, each with its own edit and level."""
    rng = np.random.default_rng(seed)
    lengths = [len(_word_spans(d["text"])) for d in docs]
    bases = [i for i, n in enumerate(lengths) if n >= MIN_WORDS]
    multi = {i for i in bases if sum(1 for line in docs[i]["text"].split("\n") if line.strip()) >= 4}
    if not bases:
        raise ValueError(f"plant_families: no document has {MIN_WORDS} words or more")
    vocab = np.array(sorted({w for i in bases[:500] for w in docs[i]["text"].split()[:300]}), dtype=object)
    names = sorted(edits)
    out, planted = list(docs), []
    order = rng.permutation(bases)
    k = 0
    while len(planted) < num_variants:
        b = int(order[k % len(order)])
        base = docs[b]
        k += 1
        for _ in range(int(rng.integers(1, max_variants + 1))):
            if len(planted) >= num_variants:
                break
            usable = names if b in multi else [n for n in names if n != "reorder"] or names
            edit = usable[int(rng.integers(len(usable)))]
            level = float(edits[edit][int(rng.integers(len(edits[edit])))])
            doc_id = f"planted-{len(planted):06d}"
            out.append({"id": doc_id, "text": edit_text(base["text"], edit, level, rng, vocab)})
            planted.append(PlantedEdit(doc_id, base["id"], edit, level))
    perm = rng.permutation(len(out))
    return [out[i] for i in perm.tolist()], planted
