"""Band parameters, sorted runs and the bounded k-way merge (the external sort)."""

import numpy as np
import pytest
from datasketch import MinHashLSH

from data_pipeline.dedup import lsh


@pytest.mark.parametrize("threshold,weights", [(0.8, (0.5, 0.5)), (0.7, (0.2, 0.8)), (0.9, (0.8, 0.2))])
def test_optimal_params_are_datasketchs(threshold, weights, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ref = MinHashLSH(threshold=threshold, num_perm=128, weights=weights)
    lsh.optimal_params.cache_clear()
    assert lsh.optimal_params(threshold, 128, *weights) == (ref.b, ref.r)
    lsh.optimal_params.cache_clear()  # second answer comes from the on-disk memo
    assert (tmp_path / "anvil" / "lsh-params.json").exists()
    assert lsh.optimal_params(threshold, 128, *weights) == (ref.b, ref.r)


def _records(n=30000, seed=0):
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 400, n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    keys[rng.random(n) < 0.15] = np.uint64(12345)  # one giant bucket spanning many blocks
    return keys, np.arange(n, dtype=np.int64)


@pytest.mark.parametrize("budget", [1 << 15, 1 << 20, 1 << 30])
def test_merge_equals_in_memory_sort(tmp_path, budget):
    keys, docs = _records()
    runs = [
        lsh.write_run(tmp_path / f"r{i}", keys[c], docs[c])
        for i, c in enumerate(np.array_split(np.random.default_rng(1).permutation(len(keys)), 23))
    ]
    blocks = list(lsh.merge_all(runs, budget, tmp_path))
    got_k = np.concatenate([b[0] for b in blocks])
    got_d = np.concatenate([b[1] for b in blocks])
    ref_k, ref_d = lsh.sort_records(keys, docs)
    np.testing.assert_array_equal(got_k, ref_k)
    np.testing.assert_array_equal(got_d, ref_d)
    for prev, nxt in zip(blocks, blocks[1:]):  # a bucket never straddles two blocks
        assert prev[0][-1] < nxt[0][0]
    if budget == 1 << 15:
        assert len(blocks) > 10 and not list(tmp_path.glob("merge*"))  # multi-pass, intermediates removed
    # the star pairs depend only on the buckets, not on how records were split into runs or blocks
    pa = np.concatenate([np.stack(lsh.bucket_pairs(*b), 1) for b in blocks])
    pb = np.stack(lsh.bucket_pairs(ref_k, ref_d), 1)
    np.testing.assert_array_equal(pa, pb)


def test_bucket_pairs_star_on_first_member():
    a, b = lsh.bucket_pairs(np.array([1, 1, 1, 2, 3, 3], dtype=np.uint64), np.array([0, 4, 5, 1, 2, 9]))
    assert list(zip(a.tolist(), b.tolist())) == [(0, 4), (0, 5), (2, 9)]


def test_band_keys_follow_band_values():
    sig = np.arange(24, dtype=np.uint64).reshape(2, 12)
    sig[1, :4] = sig[0, :4]
    keys = lsh.band_keys(sig, 3, 4)
    assert keys[0, 0] == keys[1, 0] and (keys[0, 1:] != keys[1, 1:]).all()
