"""Training data: megatron-built prefixes load, blends hit their weights, same seed same order,
caches are built once and shared by ranks, the sampler resumes exactly at another DP size, and
mismatched vocabularies / damaged prefixes are refused before training."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from framework.data.datasets import GlobalBatchSampler, build_datasets, check_compatible, micro_batch_indices
from framework.data.shards import PrefixError
from tests.helpers.dist import run_distributed

SEQ = 16
WEIGHTS = [0.5, 0.3, 0.2]


def megatron_prefix(path, source: int, docs: int = 400, seed: int = 0, dtype=np.uint16):
    """A prefix written by megatron-core's own builder; source k uses token ids in [100k+1, 100k+99]."""
    rng = np.random.default_rng(seed + source)
    builder = IndexedDatasetBuilder(f"{path}.bin", dtype=dtype)
    for _ in range(docs):
        n = int(rng.integers(3, 60))
        doc = np.concatenate([rng.integers(100 * source + 1, 100 * source + 100, n), [0]])
        builder.add_document(torch.from_numpy(doc), [n + 1])
    builder.finalize(f"{path}.idx")
    return str(path)


@pytest.fixture(scope="module")
def prefixes(tmp_path_factory):
    root = tmp_path_factory.mktemp("megatron")
    return [megatron_prefix(root / f"src{k}", k) for k in range(3)]


def build(prefixes, cache, seed=1234, n=10_000, weights=WEIGHTS):
    return build_datasets(prefixes, weights, "98,2,0", SEQ, seed, n, 64, str(cache), 384, 0)


def test_blend_shares_order_and_cache(prefixes, tmp_path):
    train, valid = build(prefixes, tmp_path / "c1")
    assert len(train) >= 10_000 and valid is not None and len(valid) >= 64
    sources = np.array([train.source(i) for i in range(10_000)])
    shares = np.bincount(sources, minlength=3) / 10_000
    assert np.abs(shares - WEIGHTS).max() < 0.01, shares
    for i in range(0, 10_000, 97):  # each sample's text really comes from the source it claims
        sample = train[i]
        assert sample.dtype == np.int64 and sample.shape == (SEQ + 1,)
        words = sample[sample != 0]
        assert ((words // 100) == sources[i]).all(), (i, sample)
    # Same seed: same order (fresh cache); another seed: another order.
    again, _ = build(prefixes, tmp_path / "c2")
    assert all((again[i] == train[i]).all() for i in range(0, 10_000, 13))
    other, _ = build(prefixes, tmp_path / "c3", seed=7)
    assert any((other[i] != train[i]).any() for i in range(50))
    # Caches are written once and reused: a rebuild adds and rewrites nothing.
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c1").iterdir()}
    build(prefixes, tmp_path / "c1")
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c1").iterdir()} == before


def test_single_prefix_and_proportional_weights(prefixes, tmp_path):
    train, valid = build_datasets(prefixes[:1], [], "100", SEQ, 1, 500, 0, str(tmp_path), 384, 0)
    assert valid is None and len(train) >= 500
    assert all(train.source(i) == 0 for i in range(10))
    train, _ = build_datasets(prefixes, [], "98,2,0", SEQ, 1, 2000, 10, str(tmp_path), 384, 0)
    assert len(train) >= 2000


def global_sequence(start_batch: int, batches: int, dp: int, gbs: int = 12, mbs: int = 2) -> list[int]:
    """The samples consumed in order (ranks concatenated in rank order) from a checkpoint."""
    seq = []
    for b in range(start_batch, start_batch + batches):
        for rank in range(dp):
            for micro in micro_batch_indices(b * gbs, gbs, mbs, rank, dp):
                seq.extend(micro)
    return seq


def test_resume_at_another_data_parallel_size(prefixes, tmp_path):
    uninterrupted = global_sequence(0, 10, dp=2)
    assert uninterrupted == list(range(120))
    saved_at = 4  # checkpoint after 4 global batches at DP=2 stores consumed_samples = 48
    for dp in (1, 2, 4):
        assert (
            global_sequence(0, saved_at, 2) + global_sequence(saved_at, 6, dp, mbs=3 if dp == 4 else 2) == uninterrupted
        )
    # The same through the DataLoader-facing sampler and real samples: DP=2 for 4 batches, then DP=4.
    train, _ = build(prefixes, tmp_path, n=200)
    head = consumed_in_order([GlobalBatchSampler(48, 0, 12, 2, r, 2) for r in range(2)], micro_per_batch=3)
    tail = consumed_in_order([GlobalBatchSampler(120, 48, 12, 1, r, 4) for r in range(4)], micro_per_batch=3)
    assert head + tail == list(range(120))
    got, expected = [train[i] for i in head + tail], [train[i] for i in range(120)]
    assert all((a == b).all() for a, b in zip(got, expected))
    assert len(GlobalBatchSampler(120, 48, 12, 1, 0, 4)) == 18


def consumed_in_order(samplers, micro_per_batch):
    per_rank = [list(s) for s in samplers]
    order = []
    for b in range(len(per_rank[0]) // micro_per_batch):
        for batches in per_rank:
            order += [i for mb in batches[b * micro_per_batch : (b + 1) * micro_per_batch] for i in mb]
    return order


def test_sampler_rejects_inconsistent_sizes():
    with pytest.raises(ValueError, match="not divisible by micro_batch_size x dp_size = 2 x 4"):
        micro_batch_indices(0, 12, 2, 0, 4)
    with pytest.raises(ValueError, match="not a multiple of global_batch_size"):
        micro_batch_indices(5, 12, 2, 0, 2)
    with pytest.raises(ValueError, match="dp_rank 2"):
        micro_batch_indices(0, 12, 2, 2, 2)


def _build_on_rank(prefixes, cache):
    import torch.distributed as dist

    train, valid = build(prefixes, cache, n=3000)
    digest = hashlib.sha256(b"".join(train[i].tobytes() for i in range(0, 3000, 7))).hexdigest()
    return dist.get_rank(), digest, len(train), len(valid)


def test_ranks_share_one_cache(prefixes, tmp_path):
    results = run_distributed(_build_on_rank, 2, prefixes, str(tmp_path / "cache"), timeout=180)
    assert [r[0] for r in results] == [0, 1]
    assert results[0][1:] == results[1][1:]
    assert len(list((tmp_path / "cache").glob("*.npy"))) > 0


def test_compatibility_checks(prefix, tokenizer_path, prefixes, tmp_path):
    report = check_compatible(prefix, str(tokenizer_path), 384)
    assert report["tokenizer_vocab_size"] == 384
    with pytest.raises(ValueError, match="tokenizer .* has 384 tokens but model.vocab_size is 256"):
        check_compatible(prefix, str(tokenizer_path), 256)
    # Shards tokenized by another tokenizer.
    other = tmp_path / "other.json"
    other.write_text(tokenizer_path.read_text().replace('"<|pad|>"', '"<|padding|>"'))
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        check_compatible(prefix, str(other), 384)
    # A sidecar that disagrees with the index.
    for ext in (".bin", ".idx", ".json"):
        shutil.copy(prefix + ext, tmp_path / f"copy{ext}")
    meta = json.loads((tmp_path / "copy.json").read_text())
    (tmp_path / "copy.json").write_text(json.dumps({**meta, "dtype": "int32"}))
    with pytest.raises(ValueError, match="dtype mismatch: .*int32 .*uint16"):
        check_compatible(str(tmp_path / "copy"), None, 384)
    (tmp_path / "copy.json").write_text(json.dumps({**meta, "vocab_size": 512}))
    with pytest.raises(ValueError, match="with a 512-token vocabulary but tokenizer .* has 384"):
        check_compatible(str(tmp_path / "copy"), str(tokenizer_path), 512)
    # Shards from other tools (no sidecar) are scanned: ids up to 299 do not fit a 256-token model.
    with pytest.raises(ValueError, match="holds token id 299 but model.vocab_size is 256"):
        check_compatible(prefixes, None, 256)
    assert check_compatible(prefixes, None, 300)["prefixes"][2]["max_token_id"] == 299


def test_damaged_prefixes_fail_before_building(prefixes, tmp_path):
    for ext in (".bin", ".idx"):
        shutil.copy(prefixes[0] + ext, tmp_path / f"bad{ext}")
    idx = (tmp_path / "bad.idx").read_bytes()
    (tmp_path / "bad.idx").write_bytes(idx[: len(idx) // 2])
    with pytest.raises(PrefixError, match=r"bad.idx: truncated: header promises 400 sequences"):
        build([str(tmp_path / "bad"), prefixes[1]], tmp_path / "cache", weights=[0.5, 0.5])
    with pytest.raises(PrefixError, match="missing"):
        build([str(tmp_path / "nope")], tmp_path / "cache", weights=[])
    with pytest.raises(ValueError, match="split 'x,y': expected 'train,valid,test' shares"):
        build_datasets(prefixes, [], "x,y", SEQ, 1, 10, 0, str(tmp_path), 384, 0)
    with pytest.raises(ValueError, match="2 weights for 3 paths"):
        build(prefixes, tmp_path / "cache", weights=[0.5, 0.5])
