"""How good is a dedup run? Precision and recall against exact Jaccard on word n-gram sets.

Ground truth: every pair of documents whose exact Jaccard similarity (on the same normalised word
n-grams the dedup uses) is >= threshold. Finding those pairs without comparing all n^2 pairs:
candidates come from a deliberately permissive LSH (bands tuned for 0.6 x threshold with false
negatives weighted 9:1; its miss probability at the threshold is below 1e-6), *all* pairs inside
each bucket, each verified exactly.

Scores, over the evaluated documents:
* pairs: predicted pairs are all pairs in the same output cluster (document and its
  `duplicate_of`); precision = predicted pairs that are true / predicted pairs, recall = true pairs
  that ended in one cluster / true pairs.
* documents: a document is a true near-duplicate if it has a true partner; it is predicted one if
  the run removed it or kept it as the representative of removed documents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from data_pipeline.dedup import lsh
from data_pipeline.dedup.minhash import MinHasher

DEFAULT_SAMPLE = 20_000


def true_pairs(
    texts: Sequence[str], threshold: float, ngram: int = 5, num_perm: int = 128, seed: int = 7
) -> tuple[np.ndarray, np.ndarray, int]:
    """(pairs (m, 2) with i < j, their exact Jaccard, candidate count) of all pairs >= threshold."""
    hasher = MinHasher(num_perm, ngram, seed)
    sets = [np.unique(h) for h in hasher.shingle_sets(texts)]
    sig = hasher.signatures_from_hashes(sets)
    b, r = lsh.optimal_params(round(0.6 * threshold, 4), num_perm, 0.1, 0.9)
    keys = lsh.band_keys(sig, b, r)
    cand = set()
    for j in range(b):
        order = np.argsort(keys[:, j], kind="stable")
        k = keys[order, j]
        starts = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1], [True]]))
        for s, e in zip(starts[:-1], starts[1:]):
            if e - s > 1:
                members = sorted(order[s:e].tolist())
                cand.update((members[x], members[y]) for x in range(len(members)) for y in range(x + 1, len(members)))
    pairs, sims = [], []
    for i, j in sorted(cand):
        a, c = sets[i], sets[j]
        if len(a) == 0 or len(c) == 0:
            continue
        inter = len(np.intersect1d(a, c, assume_unique=True))
        sim = inter / (len(a) + len(c) - inter)
        if sim >= threshold:
            pairs.append((i, j))
            sims.append(sim)
    return np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(sims), len(cand)


def score(n: int, pairs: np.ndarray, label: np.ndarray, flagged: np.ndarray) -> dict:
    """Metrics of a clustering `label` (n,) and predicted near-duplicate flags against true pairs."""
    _, counts = np.unique(label, return_counts=True)
    predicted = int((counts * (counts - 1) // 2).sum())
    same = int((label[pairs[:, 0]] == label[pairs[:, 1]]).sum()) if len(pairs) else 0
    truth = np.zeros(n, dtype=bool)
    truth[pairs.ravel()] = True
    tp = int((truth & flagged).sum())

    def ratio(a: int, b: int) -> float:
        return round(a / b, 4) if b else 1.0

    return {
        "docs": n,
        "true_pairs": len(pairs),
        "predicted_pairs": predicted,
        "pair_precision": ratio(same, predicted),
        "pair_recall": ratio(same, len(pairs)),
        "true_dup_docs": int(truth.sum()),
        "predicted_dup_docs": int(flagged.sum()),
        "doc_precision": ratio(tp, int(flagged.sum())),
        "doc_recall": ratio(tp, int(truth.sum())),
    }


def score_planted(pairs: np.ndarray, label: np.ndarray, flagged: np.ndarray, planted) -> dict:
    """`score` restricted to planted variants, per edit type. `planted`: (variant index, base
    index, edit) per planted document. Documents: a variant is a true near-duplicate if it has
    any true partner; precision/recall over the variants of that edit. Base pairs: the (base,
    variant) pair is true when its exact Jaccard is >= the threshold (it is among `pairs`) and
    predicted when the run put both in one cluster."""
    truth = np.zeros(len(label), dtype=bool)
    truth[pairs.ravel()] = True
    true_pairs = {(int(a), int(b)) for a, b in pairs.tolist()}

    def ratio(a: int, b: int) -> float:
        return round(a / b, 4) if b else 1.0

    out = {}
    for edit in sorted({e for _, _, e in planted}):
        docs = np.array([v for v, _, e in planted if e == edit], dtype=np.int64)
        base_pairs = [(min(v, b), max(v, b)) for v, b, e in planted if e == edit]
        t, f = truth[docs], flagged[docs]
        is_true = np.array([p in true_pairs for p in base_pairs], dtype=bool)
        same = np.array([label[a] == label[b] for a, b in base_pairs], dtype=bool)
        out[edit] = {
            "variants": len(docs),
            "true_dup_docs": int(t.sum()),
            "doc_precision": ratio(int((t & f).sum()), int(f.sum())),
            "doc_recall": ratio(int((t & f).sum()), int(t.sum())),
            "true_base_pairs": int(is_true.sum()),
            "pair_precision": ratio(int((is_true & same).sum()), int(same.sum())),
            "pair_recall": ratio(int((is_true & same).sum()), int(is_true.sum())),
        }
    return out


def labels_from_duplicates(ids: Sequence[str], duplicate_of: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels and near-duplicate flags of `ids` from an {id: duplicate_of} mapping."""
    reps = set(duplicate_of.values())
    names = {}
    label = np.array([names.setdefault(duplicate_of.get(i, i), len(names)) for i in ids], dtype=np.int64)
    flagged = np.array([i in duplicate_of or i in reps for i in ids], dtype=bool)
    return label, flagged


def evaluate(
    inputs: Sequence[str], dedup_output: str | Path, threshold: float = 0.8, ngram: int = 5, sample: int | None = None
) -> dict:
    from data_pipeline.io import iter_documents

    sample = sample or DEFAULT_SAMPLE
    ids, texts = [], []
    for doc in iter_documents(list(inputs)):
        ids.append(doc.id)
        texts.append(doc.text)
        if len(ids) >= sample:
            break
    duplicate_of = {}
    with open(Path(dedup_output) / "duplicates.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            duplicate_of[rec["id"]] = rec["duplicate_of"]
    pairs, _, cand = true_pairs(texts, threshold, ngram)
    label, flagged = labels_from_duplicates(ids, duplicate_of)
    report = score(len(ids), pairs, label, flagged)
    report.update({"threshold": threshold, "ngram": ngram, "candidates_checked": cand})
    return report


def print_report(report: dict) -> None:
    from framework.runtime import print_table

    print_table(
        [
            {
                "level": lvl,
                "precision": report[f"{lvl}_precision"],
                "recall": report[f"{lvl}_recall"],
                "true": report["true_pairs"] if lvl == "pair" else report["true_dup_docs"],
                "predicted": report["predicted_pairs"] if lvl == "pair" else report["predicted_dup_docs"],
            }
            for lvl in ("pair", "doc")
        ],
        title=f"dedup vs exact Jaccard >= {report['threshold']} on {report['docs']} documents",
    )
