"""Signatures agree exactly with datasketch (affine64 scheme, same shingle hash), batched or not."""

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash

from data_pipeline.dedup import minhash
from data_pipeline.dedup.minhash import MinHasher, hash_shingle, normalize, shingle_hashes, shingles

TEXTS = [
    "The quick brown fox jumps over the lazy dog, again and again; the dog sleeps on.",
    "Ünïcödé TEXT — with «punctuation» and ﬁ ligatures, Straße, ÉCOLE.",
    "中文字符测试 没有空格的文字 日本語のテキスト ok",
    "one",
    "two words",
    "tab\tseparated\nlines__with_underscores and   spaces!!!",
    " ".join(f"w{i % 37}" for i in range(500)),
]


def _datasketch(text, num_perm=128, seed=1, n=5):
    m = MinHash(num_perm=num_perm, seed=seed, hashfunc=hash_shingle, scheme="affine64")
    m.update_batch(shingles(text, n))
    return m


@pytest.mark.parametrize("num_perm,seed,n", [(128, 1, 5), (64, 42, 3)])
def test_signatures_equal_datasketch(num_perm, seed, n):
    sig = MinHasher(num_perm, n, seed).signatures(TEXTS)
    for text, row in zip(TEXTS, sig):
        ref = _datasketch(text, num_perm, seed, n)
        np.testing.assert_array_equal(row, ref.hashvalues)
        lean = LeanMinHash(seed=seed, hashvalues=row, scheme="affine64")
        assert lean.jaccard(LeanMinHash(ref)) == 1.0
    a, b = (LeanMinHash(seed=seed, hashvalues=r, scheme="affine64") for r in sig[:2])
    assert a.jaccard(b) == _datasketch(TEXTS[0], num_perm, seed, n).jaccard(_datasketch(TEXTS[1], num_perm, seed, n))


def test_vectorised_shingle_hashes_match_reference():
    for text in TEXTS:
        expected = [hash_shingle(s) for s in shingles(text, 5)]
        assert shingle_hashes(normalize(text), 5).tolist() == expected


def test_normalisation_rules():
    assert normalize("Hello,  WORLD!! foo_bar") == b"hello world foo bar"
    assert normalize("Ｆｕｌｌｗｉｄｔｈ ﬁne") == b"fullwidth fine"  # NFKC
    assert normalize("中文") == "中 文".encode()  # one token per ideograph
    assert shingles("just three words", 5) == [b"just three words"]  # short doc: one shingle
    assert shingles("... !!! ---", 5) == []


def test_long_documents_are_hashed_in_windows(monkeypatch):
    text = " ".join(f"word{i % 101}x{i % 7}" for i in range(3000))
    whole = shingle_hashes(normalize(text), 5)
    monkeypatch.setattr(minhash, "_CHUNK_BYTES", 257)
    np.testing.assert_array_equal(shingle_hashes(normalize(text), 5), whole)
    monkeypatch.setattr(minhash, "_PERM_BLOCK", 100)  # documents split across matrix blocks
    sig = MinHasher(128, 5, 1).signatures([text, "short one", text[:900]])
    np.testing.assert_array_equal(sig[0], _datasketch(text).hashvalues)
    np.testing.assert_array_equal(sig[2], _datasketch(text[:900]).hashvalues)


def test_batches_equal_single_documents_and_empty_rows():
    h = MinHasher()
    batch = h.signatures(TEXTS + ["", "?!"])
    for i, t in enumerate(TEXTS):
        np.testing.assert_array_equal(batch[i], h.signatures([t])[0])
    assert (batch[-2:] == np.iinfo(np.uint64).max).all()
