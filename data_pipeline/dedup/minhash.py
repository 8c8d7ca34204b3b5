"""MinHash signatures over word n-grams, vectorised with numpy, bit-compatible with datasketch.

Why our own code and not `datasketch.MinHash.bulk`: datasketch hashes every shingle with a Python
call (SHA-1 by default), which is most of its run time (~1.5 ms for a 5 kB document). Here a
document is normalised to one byte string, every word n-gram is hashed at once with a polynomial
rolling hash over prefix sums (`shingle_hashes`), and the 128 permutations are applied to a whole
batch of documents as one (perm x shingle) matrix with a segmented min (`MinHasher.signatures`).

Compatibility contract (tested): the permutations are datasketch's "affine64" scheme
(`MinHash(num_perm, seed, scheme="affine64")`: the MurmurHash3 64-bit finaliser, then
`a * h + b mod 2**64` with `a`, `b` drawn from `np.random.RandomState(seed)`), and `hash_shingle`
is the same shingle hash in plain Python. So `MinHash(num_perm, seed, hashfunc=hash_shingle,
scheme="affine64")` fed with `shingles(text)` gives exactly our signature, and our signature can be
loaded into a `LeanMinHash(seed=seed, hashvalues=sig, scheme="affine64")`.

Normalisation: NFKC, lower case, every run of characters that are not letters, digits or combining
marks (punctuation, symbols, whitespace, `_`) folded to one space; done with a code-point class
table in numpy rather than a regex (5-10x faster on non-ASCII text). Scripts written without
spaces (CJK, kana, Thai, Lao, Khmer, Myanmar) are split into one token per character. A document with fewer than `n` words has one shingle (all its
words); a document with no word at all has no shingles and an all-max signature.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

U64 = np.uint64
MAX_HASH = np.iinfo(np.uint64).max
_MASK = (1 << 64) - 1
# Multiplier of the polynomial shingle hash (odd, so it is invertible modulo 2**64).
POLY = 0x9E3779B97F4A7C15
_POLY_INV = pow(POLY, -1, 1 << 64)
_SPACE = 32
_CHUNK_BYTES = 1 << 20  # longer documents are hashed in windows of this many bytes
_PERM_BLOCK = 8192  # shingles per block of the (perm x shingle) matrix (fastest measured)

# ASCII fast path: one bytes.translate does lower-casing and punctuation folding.
_ASCII_TABLE = bytes((c + 32 if 65 <= c <= 90 else c) if chr(c).isalnum() else _SPACE for c in range(256))
# Scripts written without spaces (Thai, Lao, Myanmar, Khmer, kana, CJK): one token per character.
_NOSPACE = [
    (0x0E00, 0x0EFF),
    (0x1000, 0x109F),
    (0x1780, 0x17FF),
    (0x3040, 0x30FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2FA1F),
]
_CLASS: np.ndarray | None = None  # code point -> 0 separator, 1 word character, 2 one-character token
_LOWER: np.ndarray | None = None  # code point -> lower case code point (_lower_table)
_NO_LOWER = np.uint32(0xFFFFFFFF)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "anvil"


def _char_classes() -> np.ndarray:
    """Letters, digits and combining marks are word characters (so Devanagari or Arabic words keep
    their vowel signs); everything else separates. Built once (0.2 s of Python) and cached on disk
    per Unicode version, since every worker process needs it."""
    global _CLASS
    if _CLASS is None:
        path = cache_dir() / f"charclass-{unicodedata.unidata_version}-{len(_NOSPACE)}.npy"
        try:
            _CLASS = np.load(path)
            return _CLASS
        except (OSError, ValueError):
            pass
        cls = np.zeros(0x110000, dtype=np.uint8)
        word = [
            cp for cp in range(0x110000) if chr(cp).isalnum() or (cp > 127 and unicodedata.category(chr(cp))[0] == "M")
        ]
        cls[word] = 1
        for lo, hi in _NOSPACE:
            span = cls[lo : hi + 1]
            span[span == 1] = 2
        _CLASS = cls
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, cls)
            tmp.replace(path)
        except OSError:
            pass
    return _CLASS


def _lower_table() -> np.ndarray:
    """Code point -> its lower case, where `str.lower` maps it to one character regardless of its
    neighbours; _NO_LOWER where not (U+0130 becomes two characters, a capital sigma depends on
    whether it ends a word): texts holding one of those are lowered by `str.lower` itself. Cached
    on disk like the class table."""
    global _LOWER
    if _LOWER is None:
        path = cache_dir() / f"lower-{unicodedata.unidata_version}.npy"
        try:
            _LOWER = np.load(path)
            return _LOWER
        except (OSError, ValueError):
            pass
        low = [chr(cp).lower() for cp in range(0x110000)]
        table = np.array([ord(x) if len(x) == 1 else _NO_LOWER for x in low], dtype=np.uint32)
        table[0x03A3] = _NO_LOWER
        _LOWER = table
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, table)
            tmp.replace(path)
        except OSError:
            pass
    return _LOWER


def _nfkc(text: str) -> str:
    """NFKC, normalising only the pieces that need it. Most text already is NFKC (the quick check
    costs ~1/20 of normalising); where it is not, usually a few lines hold a no-break space or a
    full-width comma. A line break is a normalisation boundary (a starter that composes with
    nothing), so normalising pieces cut at line breaks gives exactly the NFKC of the whole text;
    pieces are ~4K characters (whole lines), so short lines cost no call each."""
    if unicodedata.is_normalized("NFKC", text):
        return text
    out, start = [], 0
    while start <= len(text):
        end = text.find("\n", start + 4096)
        end = len(text) if end < 0 else end
        piece = text[start:end]
        out.append(piece if unicodedata.is_normalized("NFKC", piece) else unicodedata.normalize("NFKC", piece))
        start = end + 1
    return "\n".join(out)


def _normalize_loose(text: str) -> bytes:
    """Lower case, NFKC, every separator character -> one space each (runs are not collapsed)."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_TABLE)
    t = _nfkc(text)
    cp = _lower_table()[np.frombuffer(t.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)]
    if (cp == _NO_LOWER).any():
        cp = np.frombuffer(t.lower().encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    cls = _char_classes()[cp]
    single = cls == 2
    if single.any():  # c -> " c "
        reps = np.where(single, 3, 1)
        out = np.repeat(np.where(cls == 0, np.uint32(_SPACE), cp), reps)
        at = np.cumsum(reps) - reps
        out[at[single]] = _SPACE
        out[at[single] + 2] = _SPACE
    else:
        out = np.where(cls == 0, np.uint32(_SPACE), cp)
    return out.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass").encode("utf-8", "surrogatepass")


def normalize(text: str) -> bytes:
    """Normalised UTF-8 bytes: tokens separated by single spaces, no leading/trailing space."""
    return b" ".join(_normalize_loose(text).split())


def shingles(text: str, n: int = 5) -> list[bytes]:
    """The word n-grams of a document as byte strings (reference implementation, for tests)."""
    words = normalize(text).split()
    if not words:
        return []
    if len(words) < n:
        return [b" ".join(words)]
    return [b" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def hash_shingle(data: bytes) -> int:
    """The 64-bit shingle hash in plain Python: sum(byte_k * POLY**k) mod 2**64."""
    h, p = 0, 1
    for c in data:
        h = (h + c * p) & _MASK
        p = (p * POLY) & _MASK
    return h


def _power_table(x: int, size: int, block: int = 1024) -> np.ndarray:
    """[x**0, x**1, ..., x**(size-1)] modulo 2**64, as an outer product of two short cumulative
    products (x**(i*block) * x**j), which is ~50x faster than one cumprod over `size` values."""
    with np.errstate(over="ignore"):
        low = np.full(block, x, dtype=U64)
        low[0] = 1
        high = np.full(-(-size // block), pow(x, block, 1 << 64), dtype=U64)
        high[0] = 1
        low, high = np.cumprod(low, dtype=U64), np.cumprod(high, dtype=U64)
        return (high[:, None] * low[None, :]).ravel()[:size]


class _Powers:
    """Growing tables of POLY**k and POLY**-k modulo 2**64 (uint64 arithmetic wraps)."""

    def __init__(self):
        self.fwd = self.inv = np.ones(1, dtype=U64)

    def _grow(self, n: int) -> None:
        size = max(n, 2 * len(self.fwd), 4096)
        self.fwd, self.inv = _power_table(POLY, size), _power_table(_POLY_INV, size)

    def tables(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.fwd) < n:
            self._grow(n)
        return self.fwd[:n], self.inv[:n]


_POWERS = _Powers()


def _window_hashes(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Polynomial hashes of arr[starts[i]:ends[i]] (all inside arr) via one prefix sum."""
    fwd, inv = _POWERS.tables(len(arr) + 1)
    with np.errstate(over="ignore"):
        # pre[j] = sum_{k<j} arr[k] * POLY**k ; hash(s, e) = (pre[e] - pre[s]) * POLY**-s
        pre = np.empty(len(arr) + 1, dtype=U64)
        pre[0] = 0
        np.cumsum(arr * fwd[: len(arr)], dtype=U64, out=pre[1:])
        return (pre[ends] - pre[starts]) * inv[starts]


def _hash_spans(arr: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Hashes of arr[s[i]:e[i]] for ascending spans, in windows of about _CHUNK_BYTES bytes so the
    prefix sums and power tables stay small; hashes are translation invariant."""
    if len(arr) <= _CHUNK_BYTES:
        return _window_hashes(arr, s, e)
    out = np.empty(len(s), dtype=U64)
    i = 0
    while i < len(s):
        j = max(i + 1, int(np.searchsorted(e, s[i] + _CHUNK_BYTES, side="right")))
        lo, hi = int(s[i]), int(e[j - 1])
        out[i:j] = _window_hashes(arr[lo:hi], s[i:j] - lo, e[i:j] - lo)
        i = j
    return out


def batch_shingle_hashes(norms: Sequence[bytes], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of many normalised documents at once: (flat uint64 hashes, count per doc).

    The documents are joined with "\n" (never left by `normalize`), so one pass of numpy finds
    every token and every n-gram; per-document numpy calls would cost more than the hashing for
    short documents."""
    counts = np.zeros(len(norms), dtype=np.int64)
    big = b"\n".join(norms)
    if not big.strip(b"\n"):
        return np.empty(0, dtype=U64), counts
    arr = np.frombuffer(big, dtype=np.uint8)
    space = arr == _SPACE
    sep = space | (arr == 10)
    if (space[1:] & sep[:-1]).any():  # runs of separators -> one space (documents keep their "\n")
        keep = np.ones(len(arr), dtype=bool)
        keep[1:] = ~(space[1:] & sep[:-1])
        arr = arr[keep]
        space = arr == _SPACE
        sep = space | (arr == 10)
    newline = sep & ~space
    starts = np.flatnonzero(~sep & np.concatenate([[True], sep[:-1]]))
    ends = np.flatnonzero(~sep & np.concatenate([sep[1:], [True]])) + 1
    tok_doc = np.searchsorted(np.flatnonzero(newline), starts)
    tok_count = np.bincount(tok_doc, minlength=len(norms))
    tok_first = np.concatenate([[0], np.cumsum(tok_count)[:-1]])
    counts = np.where(tok_count >= n, tok_count - n + 1, np.minimum(tok_count, 1))
    total = int(counts.sum())
    first_sh = np.concatenate([[0], np.cumsum(counts)[:-1]])
    k = np.arange(total) - np.repeat(first_sh, counts)
    sh_start = np.repeat(tok_first, counts) + k
    sh_end = np.minimum(sh_start + n - 1, np.repeat(tok_first + tok_count - 1, counts))
    return _hash_spans(arr, starts[sh_start], ends[sh_end]), counts


def shingle_hashes(norm: bytes, n: int) -> np.ndarray:
    """uint64 hashes of every word n-gram of normalised bytes (== hash_shingle of `shingles`)."""
    return batch_shingle_hashes([norm], n)[0]


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, as datasketch applies it before the permutations."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> U64(33))
        h = h * U64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> U64(33))
        h = h * U64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> U64(33))


def datasketch_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) exactly as datasketch.MinHash(num_perm, seed, scheme="affine64") draws them."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 63, num_perm, dtype=U64) * U64(2) + U64(1)
    b = gen.randint(0, 1 << 64, num_perm, dtype=U64)
    return a, b


class MinHasher:
    """Signatures for batches of documents: `signatures(texts) -> (len(texts), num_perm) uint64`."""

    def __init__(self, num_perm: int = 128, ngram: int = 5, seed: int = 1):
        if num_perm < 1 or ngram < 1:
            raise ValueError("num_perm and ngram must be positive")
        self.num_perm, self.ngram, self.seed = num_perm, ngram, seed
        a, b = datasketch_permutations(num_perm, seed)
        self.a, self.b = a[:, None], b[:, None]

    def hash_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(flat shingle hashes, count per document) of a batch of raw texts."""
        return batch_shingle_hashes([_normalize_loose(t) for t in texts], self.ngram)

    def shingle_sets(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per document, the uint64 shingle hashes (not de-duplicated)."""
        flat, counts = self.hash_batch(texts)
        return np.split(flat, np.cumsum(counts)[:-1]) if len(texts) else []

    def signatures_from_hashes(self, hashes: Sequence[np.ndarray]) -> np.ndarray:
        counts = np.fromiter((len(h) for h in hashes), dtype=np.int64, count=len(hashes))
        flat = np.concatenate(list(hashes)) if len(hashes) else np.empty(0, dtype=U64)
        return self.signatures_from_flat(flat.astype(U64), counts)

    def signatures_from_flat(self, flat: np.ndarray, counts: np.ndarray) -> np.ndarray:
        sig = np.full((len(counts), self.num_perm), MAX_HASH, dtype=U64)
        total = int(counts.sum())
        if total == 0:
            return sig
        flat = _fmix64(flat)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        # Blocks of _PERM_BLOCK shingles keep the (perm x shingle) matrix cache-sized; every block
        # is cut at document starts and at its own start, and a segmented min gives each piece.
        cuts = np.union1d(bounds[:-1][counts > 0], np.arange(0, total, _PERM_BLOCK))
        owner = np.searchsorted(bounds, cuts, side="right") - 1
        buf = np.empty((self.num_perm, min(_PERM_BLOCK, total)), dtype=U64)
        for start in range(0, total, _PERM_BLOCK):
            stop = min(total, start + _PERM_BLOCK)
            m = buf[:, : stop - start]
            with np.errstate(over="ignore"):
                np.multiply(self.a, flat[start:stop][None, :], out=m)
                np.add(m, self.b, out=m)
            lo, hi = np.searchsorted(cuts, [start, stop])
            mins = np.minimum.reduceat(m, cuts[lo:hi] - start, axis=1).T
            np.minimum.at(sig, owner[lo:hi], mins)
        return sig

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        return self.signatures_from_flat(*self.hash_batch(texts))


def jaccard_estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal MinHash values (datasketch's `MinHash.jaccard`)."""
    return np.count_nonzero(sig_a == sig_b, axis=-1) / sig_a.shape[-1]


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard of two shingle-hash sets (arrays may hold repeats)."""
    a, b = np.unique(a), np.unique(b)
    if len(a) == 0 and len(b) == 0:
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)
