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


def test_nfkc_line_by_line_equals_nfkc_of_the_whole_text():
    import random
    import unicodedata

    from data_pipeline.dedup.minhash import _nfkc

    alphabet = "ae\n \u00a0\u0301\u0308\u0338=\uff0c\uff21\ufb01\u2026\u1100\u1161\u11a8\uac00\u0b47\u0b3e\u212b\u00c5"
    rng = random.Random(0)
    for _ in range(3000):  # combining marks and jamo right after a line break, compat characters
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        assert _nfkc(text) == unicodedata.normalize("NFKC", text), ascii(text)


def test_normalisation_equals_the_plain_string_definition():
    """NFKC of the whole text, `str.lower`, then each character folded by its class: the
    table-driven lower case and the piecewise NFKC change nothing (final sigma, U+0130 included)."""
    import random
    import unicodedata

    from data_pipeline.dedup import minhash

    classes = minhash._char_classes()

    def reference(text: str) -> bytes:
        out = []
        for ch in unicodedata.normalize("NFKC", text).lower():
            c = classes[ord(ch)]
            out.append(" " if c == 0 else f" {ch} " if c == 2 else ch)
        return "".join(out).encode("utf-8", "surrogatepass")

    alphabet = "aZ \n\u00a0\u0130\u03a3\u03c3\u0391\u0301\u0308\uff21\ufb01\u2026\u1e9e\u00df\u0131\u10a0\u13a0"
    alphabet += "\u0410\u4e2d\u3042\uac00\u0e01\U0001d400\u2160\u24b6\u0345\u1f88"
    rng = random.Random(1)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 15)))
        assert minhash._normalize_loose(text) == reference(text), ascii(text)
    long_text = "\n".join(f"Ligne {i} \u00a0caf\u00e9 \uff0c \u03a3\u039f\u03a3" for i in range(2000))  # pieces
    assert minhash._normalize_loose(long_text) == reference(long_text)
