"""Clusters: union-find over verified pairs, and the representative each cluster keeps.

The partition is kept as `root[doc]` = the smallest document index of the doc's cluster, fully
compressed after every batch of edges, so it does not depend on the order pairs arrive in (bands,
blocks, workers). Each batch of edges is resolved with scipy's connected components on the roots
it touches, then one vectorised relabel of the whole array - fast for millions of pairs, and
needing only 8 bytes per document.

The representative is chosen afterwards by a rule that only looks at the documents themselves:
`first` (smallest input index), `longest` (most characters, then first) or `field:NAME` (largest
numeric metadata value, missing values last, then first).
"""

from __future__ import annotations

import numpy as np


class UnionFind:
    def __init__(self, n: int, root: np.ndarray | None = None):
        self.root = np.arange(n, dtype=np.int64) if root is None else root.astype(np.int64)

    def grow(self, n: int) -> None:
        if n > len(self.root):
            self.root = np.concatenate([self.root, np.arange(len(self.root), n, dtype=np.int64)])

    def union_pairs(self, a: np.ndarray, b: np.ndarray) -> int:
        """Merge the clusters of every pair (a[i], b[i]); returns how many merges happened."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        ra, rb = self.root[a], self.root[b]
        keep = ra != rb
        if not keep.any():
            return 0
        ra, rb = ra[keep], rb[keep]
        nodes, inv = np.unique(np.concatenate([ra, rb]), return_inverse=True)
        m = len(ra)
        graph = coo_matrix((np.ones(m, dtype=np.int8), (inv[:m], inv[m:])), shape=(len(nodes), len(nodes)))
        ncomp, label = connected_components(graph, directed=False)
        new_root = np.full(ncomp, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(new_root, label, nodes)
        lut_changed = new_root[label] != nodes
        if lut_changed.any():
            old, new = nodes[lut_changed], new_root[label][lut_changed]
            # relabel every document whose root moved (roots are sorted, so searchsorted finds them)
            pos = np.searchsorted(old, self.root)
            pos_c = np.minimum(pos, len(old) - 1)
            hit = old[pos_c] == self.root
            self.root[hit] = new[pos_c[hit]]
        return len(nodes) - ncomp


def parse_keep(rule: str) -> tuple[str, str | None]:
    if rule in ("first", "longest"):
        return rule, None
    if rule.startswith("field:") and len(rule) > 6:
        return "field", rule[6:]
    raise ValueError(f"--keep: expected first, longest or field:NAME, got {rule!r}")


def representatives(
    root: np.ndarray, rule: str, length: np.ndarray | None = None, field: np.ndarray | None = None
) -> np.ndarray:
    """rep[doc] = the document kept for doc's cluster under `rule`."""
    kind, _ = parse_keep(rule)
    n = len(root)
    idx = np.arange(n, dtype=np.int64)
    if kind == "first":
        return root.copy()  # the root is the smallest index of its cluster
    if kind == "longest":
        order = np.lexsort((idx, -length.astype(np.int64), root))
    else:
        value = np.where(np.isnan(field), -np.inf, field)
        order = np.lexsort((idx, -value, root))
    sorted_roots = root[order]
    first = np.concatenate([[True], sorted_roots[1:] != sorted_roots[:-1]])
    rep_of_root = np.empty(n, dtype=np.int64)
    rep_of_root[sorted_roots[first]] = order[first]
    return rep_of_root[root]


def cluster_sizes(root: np.ndarray, alive: np.ndarray | None = None) -> dict[str, int]:
    """Histogram {size: number of clusters} over clusters of at least two documents."""
    r = root if alive is None else root[alive]
    _, counts = np.unique(r, return_counts=True)
    sizes, freq = np.unique(counts[counts > 1], return_counts=True)
    return {str(int(s)): int(f) for s, f in zip(sizes, freq)}
