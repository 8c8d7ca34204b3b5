"""fastText classifiers for the `classifier` step: loading `.bin` models and training small ones.

The quality classifiers that recent corpora are filtered with (DCLM's `__label__hq` model, the
FineWeb-Edu fastText variants) and fastText language id (`lid.176.bin`) are all fastText
supervised models, so the `classifier` step loads them as they are published. The bindings come
from the `fasttext-community` wheel: maintained upstream fastText that works with NumPy 2 (the
original `fasttext` wheel does not) and reads and writes the same model files (format version
12). Chosen over `fasttext-numpy2`, whose trainer leaves 90% of the input matrix uninitialised at
`thread=1` (upstream's DenseMatrix::uniform bug): model files then differ between identical runs
and unseen n-grams can hit garbage rows. Imported only when a fastText model is used.

Scoring follows the published recipes: newlines become spaces (fastText reads one line per
example) and the score is the probability of one label (`classifier.label`) among all labels.
Training (`anvil data train-classifier --backend fasttext`) writes labels `__label__hq` (positive)
and `__label__lq` (negative), the names DCLM uses, on one thread with a fixed seed, so the same
inputs and settings give the same model file.
"""

from __future__ import annotations

import hashlib
import random
import struct
from pathlib import Path


def is_holdout(doc_id: str, fraction: float) -> bool:
    """The held-out split of both classifier trainers (sklearn and fastText): a hash of the id."""
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")
    return (h % 10_000) < fraction * 10_000


LABEL_PREFIX = "__label__"
POSITIVE, NEGATIVE = "__label__hq", "__label__lq"
# First four bytes of every fastText model file (FASTTEXT_FILEFORMAT_MAGIC_INT32 in fasttext.cc).
MAGIC = struct.pack("<i", 793712314)


def is_fasttext_file(path: str | Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == MAGIC


class Reader:
    """Bounds-checked reads over a model file's bytes (memory-mapped: DCLM's model is gigabytes)."""

    def __init__(self, data, path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f"{self.path}: truncated: needs more than its {len(self.data)} bytes")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def skip(self, size: int) -> None:
        if size < 0 or self.pos + size > len(self.data):
            raise ValueError(
                f"{self.path}: truncated or corrupt: a block of {size} bytes at offset {self.pos} "
                f"runs past the end of the file ({len(self.data)} bytes)"
            )
        self.pos += size

    def word(self) -> None:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ValueError(f"{self.path}: truncated inside the dictionary")
        self.pos = end + 1


def _skip_matrix(r: Reader, quantized: bool) -> None:
    if not quantized:  # DenseMatrix: int64 m, int64 n, float32[m * n]
        m, n = r.take("<qq")
        r.skip(4 * m * n if m >= 0 and n >= 0 else -1)
        return
    qnorm, m, n, codesize = r.take("<?qqi")  # QuantMatrix, then its ProductQuantizer(s)
    r.skip(codesize)
    for with_norms in (False, True):
        if with_norms and not qnorm:
            break
        if with_norms:
            r.skip(m)
        dim, _nsubq, _dsub, _lastdsub = r.take("<iiii")
        r.skip(4 * dim * 256 if dim >= 0 else -1)


def check_model_file(path: str | Path) -> None:
    """Walk a fastText model file's layout (format versions 11 and 12) and raise ValueError
    unless it is whole. fastText's own loader loops forever on a file cut inside its dictionary,
    so nothing reaches it unchecked."""
    import mmap

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        r = Reader(data, path)
        magic, version = r.take("<ii")
        if magic != 793712314:
            raise ValueError(f"{path}: not a fastText model (bad magic number)")
        if version not in (11, 12):  # 11: older published models, same layout (fastText reads both)
            raise ValueError(f"{path}: fastText file format version {version}; this loader reads 11 and 12")
        r.skip(12 * 4 + 8)  # Args: 12 int32 and the sampling threshold `t` (double)
        size, _nwords, _nlabels, _ntokens, pruneidx_size = r.take("<iiiqq")
        for _ in range(size):
            r.word()
            r.skip(8 + 1)  # count (int64), entry type (int8)
        r.skip(8 * max(pruneidx_size, 0))
        (quant_input,) = r.take("<?")
        _skip_matrix(r, quant_input)
        (quant_output,) = r.take("<?")
        _skip_matrix(r, quant_output)
        if r.pos != len(data):
            raise ValueError(
                f"{path}: {len(data) - r.pos} unexpected bytes after the model ({len(data)} "
                f"bytes, the layout ends at {r.pos})"
            )


def _one_line(text: str) -> str:
    return text.replace("\n", " ").replace("\r", " ")


class FastTextModel:
    """A fastText supervised model; `scores(texts)` is the probability of `label` for each text."""

    def __init__(self, path: str | Path, label: str = POSITIVE):
        import fasttext

        check_model_file(path)
        self.model = fasttext.load_model(str(path))
        labels = list(self.model.get_labels())
        if not labels:
            raise ValueError(f"{path}: a fastText model without labels (an unsupervised word-vector model?)")
        if label not in labels and LABEL_PREFIX + label in labels:
            label = LABEL_PREFIX + label  # `label: en` means `__label__en`
        if label not in labels:
            shown = ", ".join(labels[:10]) + (f" ... ({len(labels)} labels)" if len(labels) > 10 else "")
            raise KeyError(f"'{label}' is not a label of {path} (labels: {shown})")
        self.label = label
        self.num_labels = len(labels)

    def score(self, text: str) -> float:
        line = _one_line(text)
        try:
            labels, probs = self.model.predict(line, k=self.num_labels, threshold=0.0)
        except UnicodeEncodeError:  # lone surrogates cannot cross into C++
            labels, probs = self.model.predict(
                line.encode("utf-8", "replace").decode("utf-8"), k=self.num_labels, threshold=0.0
            )
        for name, prob in zip(labels, probs):
            if name == self.label:
                return min(1.0, max(0.0, float(prob)))  # fastText adds 1e-5 before its log
        return 0.0

    def scores(self, texts: list[str]) -> list[float]:
        return [self.score(t) for t in texts]


def train_fasttext(
    positive: list[str],
    negative: list[str],
    output: str | Path,
    *,
    dim: int = 64,
    word_ngrams: int = 2,
    buckets: int = 2**18,
    epoch: int = 25,
    lr: float = 0.5,
    min_count: int = 1,
    threads: int = 1,
    max_chars: int = 20_000,
    holdout: float = 0.1,
    max_docs: int | None = None,
    seed: int = 0,
) -> dict:
    """Train a `__label__hq` / `__label__lq` model on the documents of `positive` / `negative`
    inputs (any reader format), write it to `output` (fastText `.bin`); return metrics."""
    import tempfile

    import fasttext

    from data_pipeline.io.readers import iter_documents

    train, held = [], []
    for label, inputs in ((POSITIVE, positive), (NEGATIVE, negative)):
        for i, doc in enumerate(iter_documents(inputs)):
            if max_docs is not None and i >= max_docs:
                break
            line = _one_line(doc.text[:max_chars]).strip()
            if line:
                (held if is_holdout(doc.id, holdout) else train).append((label, line))
    if len({label for label, _ in train}) < 2:
        raise ValueError("training needs at least one positive and one negative document outside the holdout")
    random.Random(seed).shuffle(train)  # SGD sees the classes interleaved, in a fixed order
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".fasttext-") as tmp:
        data = Path(tmp) / "train.txt"
        with open(data, "w", encoding="utf-8", errors="replace") as fh:
            fh.writelines(f"{label} {line}\n" for label, line in train)
        model = fasttext.train_supervised(
            input=str(data),
            dim=dim,
            wordNgrams=word_ngrams,
            bucket=buckets,
            epoch=epoch,
            lr=lr,
            minCount=min_count,
            thread=threads,
            seed=seed,
            verbose=0,
        )
        model.save_model(str(Path(tmp) / "model.bin"))
        (Path(tmp) / "model.bin").replace(out)
    scorer = FastTextModel(out)
    metrics = {
        "docs": len(train) + len(held),
        "positive": sum(label == POSITIVE for label, _ in train + held),
        "negative": sum(label == NEGATIVE for label, _ in train + held),
        "train_accuracy": _accuracy(scorer, train),
    }
    if held:
        metrics["holdout_docs"] = len(held)
        metrics["holdout_accuracy"] = _accuracy(scorer, held)
    return metrics


def _accuracy(scorer: FastTextModel, examples: list[tuple[str, str]]) -> float:
    right = sum((scorer.score(line) >= 0.5) == (label == POSITIVE) for label, line in examples)
    return right / len(examples)
