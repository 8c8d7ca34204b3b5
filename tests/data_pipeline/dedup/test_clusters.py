"""Union-find gives one partition whatever the edge order; representatives follow the rule."""

import numpy as np
import pytest

from data_pipeline.dedup.clusters import UnionFind, cluster_sizes, parse_keep, representatives


def test_partition_independent_of_edge_order_and_batches():
    rng = np.random.default_rng(0)
    edges = rng.integers(0, 500, (400, 2))
    roots = []
    for seed, batch in [(1, 400), (2, 7), (3, 1)]:
        order = np.random.default_rng(seed).permutation(len(edges))
        uf = UnionFind(500)
        for s in range(0, len(edges), batch):
            e = edges[order[s : s + batch]]
            uf.union_pairs(e[:, 1], e[:, 0])
        roots.append(uf.root)
    assert all((r == roots[0]).all() for r in roots)
    for a, b in edges:  # root is the smallest member
        assert roots[0][a] == roots[0][b] <= min(a, b)


def test_representative_rules():
    root = np.array([0, 0, 2, 0, 2, 5])
    length = np.array([5, 9, 3, 9, 7, 1])
    field = np.array([np.nan, 1.0, 2.0, 3.0, np.nan, 0.0])
    assert representatives(root, "first").tolist() == [0, 0, 2, 0, 2, 5]
    assert representatives(root, "longest", length).tolist() == [1, 1, 4, 1, 4, 5]  # tie -> first
    assert representatives(root, "field:q", length, field).tolist() == [3, 3, 2, 3, 2, 5]  # NaN last
    assert cluster_sizes(root) == {"2": 1, "3": 1}
    with pytest.raises(ValueError, match="field:NAME"):
        parse_keep("biggest")


@pytest.mark.parametrize("shape", ["random", "path", "star"])
def test_components_equal_scipy_connected_components(shape):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from data_pipeline.dedup.clusters import _components

    n, rng = 3000, np.random.default_rng(4)
    if shape == "random":
        u, v = rng.integers(0, n, 2500), rng.integers(0, n, 2500)
    elif shape == "path":  # a long chain in shuffled node order: many hooking rounds if done badly
        perm = rng.permutation(n)
        u, v = perm[:-1], perm[1:]
    else:
        u, v = np.full(n - 1, 1234), np.delete(np.arange(n), 1234)
    label = _components(n, u, v)
    ncomp, ref = connected_components(coo_matrix((np.ones(len(u)), (u, v)), shape=(n, n)), directed=False)
    assert len(np.unique(label)) == ncomp
    first = np.full(ncomp, n)
    np.minimum.at(first, ref, np.arange(n))
    assert (label == first[ref]).all()  # every component labelled by its smallest node
