"""Several corpora -> one tokenizer, one common held-out set, one token prefix each (`anvil ladder`).

Comparing curation recipes by training on each only means something when every corpus is scored
on the same held-out text in the same tokens: a loss on a corpus's own validation split, or in its
own tokenizer's units, compares nothing. `prepare_corpora` does, for K corpora:

1. split: every corpus is read through the shared readers (files, folders, globs of any supported
   format; unreadable records skipped, counted and written to `DATA/rejected/NAME.jsonl`). A
   document is held out when the hash of (seed, its `id`) falls below `heldout_fraction`. The
   decision depends on the id only, so a page that several corpora keep (curated from one crawl,
   ids preserved) is held out of all of them; a document whose text equals a held-out text is
   held out too (the same text under another id). The held-out set is the distinct texts of the
   held-out documents of every corpus (the union), in hash order, or of the corpora named in
   `heldout_from` only (a reference corpus as the yardstick; the same documents still leave every
   corpus, so the training sets do not depend on it and changing it retrains nothing);
2. tokenizer: one byte-level BPE tokenizer trained on the union of the training documents, each
   distinct text once, corpora in name order (or, capped, one document from each corpus in turn);
3. tokens: each corpus's training documents -> `DATA/tokens/NAME`, the held-out set ->
   `DATA/tokens/heldout` (Megatron prefixes, through `tokenize_sources`).

Each stage's outputs are its markers (`split.json`, `eval.json`, `tokenizer.json`, a prefix's sidecar),
so a rerun skips what is done. `fingerprint.json` records the inputs (file sizes and modification
times) and settings; a rerun with different ones is refused instead of mixing two experiments.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from framework.runtime import get_logger

log = get_logger("anvil.ladder")
HELDOUT = "heldout"


class CorpusError(ValueError):
    """Bad ladder input (a corpus that reads as nothing, outputs made from other inputs)."""


@dataclass
class PreparedCorpora:
    """What the sweeps need: one tokenizer, a token prefix per corpus and the held-out prefix."""

    tokenizer: str
    vocab_size: int  # the tokenizer's (padded) vocabulary
    prefixes: dict[str, str]  # NAME -> training prefix
    heldout: str  # held-out prefix
    tokens: dict[str, int]  # NAME -> training tokens (the corpus's unique tokens)
    documents: dict[str, dict] = field(default_factory=dict)  # NAME -> {read, heldout, train, rejected}
    heldout_documents: int = 0
    heldout_tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _unit(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from (seed, key): the held-out draw, independent of input order."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _files(inputs: str | list[str]) -> list[Path]:
    from data_pipeline.io.readers import expand_inputs

    return expand_inputs(inputs if isinstance(inputs, list) else [inputs])


def _fingerprint(corpora: dict[str, str | list[str]], settings: dict) -> dict:
    inputs = {}
    for name in sorted(corpora):
        try:
            files = _files(corpora[name])
        except (FileNotFoundError, ValueError) as exc:
            raise CorpusError(f"config key 'corpora.{name}': {exc}") from None
        inputs[name] = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return {"inputs": inputs, **settings}


def _check_fingerprint(data_dir: Path, fingerprint: dict) -> None:
    path = data_dir / "fingerprint.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != fingerprint:
            changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            if "inputs" in changed:
                names = set(old.get("inputs", {})) | set(fingerprint["inputs"])
                changed.remove("inputs")
                changed += [
                    f"corpora.{n}"
                    for n in sorted(names)
                    if old.get("inputs", {}).get(n) != fingerprint["inputs"].get(n)
                ]
            raise CorpusError(
                f"{data_dir} was prepared from other inputs or settings ({', '.join(changed)} changed); "
                "use another output folder or delete it to start over"
            )
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_json(path, fingerprint)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


class _Split:
    """The held-out decision of stage 1, reused by the later stages to filter training documents."""

    def __init__(self, ids: set[str], texts: set[bytes]):
        self.ids, self.texts = ids, texts

    def is_heldout(self, doc_id: str, text: str) -> bool:
        return doc_id in self.ids or _text_key(text) in self.texts


def _split(corpora: dict, fraction: float, seed: int, data_dir: Path) -> tuple[_Split, dict]:
    """Stage 1: the held-out ids and texts, `heldout_candidates.jsonl` (every distinct held-out
    text with the corpora that hold it, in hash order) and per-corpus read counts."""
    marker = data_dir / "split.json"
    candidates = data_dir / "heldout_candidates.jsonl"
    if marker.is_file() and candidates.is_file():
        info = json.loads(marker.read_text())
        return _Split(set(info["ids"]), {bytes.fromhex(h) for h in info["texts"]}), info["documents"]
    ids: set[str] = set()
    held: dict[bytes, list] = {}  # text key -> [draw, offset, length, corpora] in the unsorted file
    counts: dict[str, dict] = {}
    (data_dir / "rejected").mkdir(parents=True, exist_ok=True)
    unsorted = data_dir / "heldout.unsorted.jsonl"
    with open(unsorted, "wb") as out:
        for name in sorted(corpora):
            counts[name] = _split_corpus(name, corpora[name], fraction, seed, data_dir, ids, held, out)
    if not held:
        raise CorpusError(
            f"heldout_fraction={fraction} held out no document of {sum(c['read'] for c in counts.values())}; raise it"
        )
    # hash order mixes the corpora, so the first eval_tokens tokens are a sample of the whole set
    tmp = candidates.with_name(candidates.name + ".tmp")
    with open(unsorted, "rb") as src, open(tmp, "w", encoding="utf-8") as fh:
        for _, offset, length, names in sorted(held.values(), key=lambda v: (v[0], v[1])):
            src.seek(offset)
            rec = json.loads(src.read(length)) | {"corpora": sorted(names)}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, candidates)
    unsorted.unlink()
    _write_json(marker, {"ids": sorted(ids), "texts": sorted(k.hex() for k in held), "documents": counts})
    return _Split(ids, set(held)), counts


def _split_corpus(name: str, inputs, fraction: float, seed: int, data_dir: Path, ids: set, held: dict, out) -> dict:
    """Read one corpus for stage 1: held-out ids into `ids`, new held-out texts appended to `out`."""
    from data_pipeline.io.readers import iter_documents

    rejected: dict[str, int] = {}
    read = 0
    with open(data_dir / "rejected" / f"{name}.jsonl", "w", encoding="utf-8") as rej:

        def on_reject(rec: dict) -> None:
            rejected[rec["reason"]] = rejected.get(rec["reason"], 0) + 1
            rej.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")

        for doc in iter_documents(_files(inputs), on_reject):
            read += 1
            draw = _unit(seed, doc.id)
            if draw < fraction:
                ids.add(doc.id)
                key = _text_key(doc.text)
                if key not in held:
                    line = (json.dumps({"id": doc.id, "text": doc.text}, ensure_ascii=False) + "\n").encode()
                    held[key] = [draw, out.tell(), len(line), set()]
                    out.write(line)
                held[key][3].add(name)
    if read == 0:
        raise CorpusError(f"config key 'corpora.{name}': no readable documents in {inputs}")
    return {"read": read, "rejected": rejected}


def _eval_set(data_dir: Path, heldout_from: list[str]) -> Path:
    """`heldout.jsonl`: the candidates held by at least one corpus of `heldout_from`. Changing
    `heldout_from` rewrites it (and drops its tokens) without touching anything trained."""
    path, marker = data_dir / "heldout.jsonl", data_dir / "eval.json"
    want = {"heldout_from": sorted(heldout_from)}
    if path.is_file() and marker.is_file() and json.loads(marker.read_text()) == want:
        return path
    for ext in (".bin", ".idx", ".json"):
        (data_dir / "tokens" / f"{HELDOUT}{ext}").unlink(missing_ok=True)
    kept = 0
    tmp = path.with_name(path.name + ".tmp")
    with open(data_dir / "heldout_candidates.jsonl", encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as fh:
        for line in src:
            rec = json.loads(line)
            if set(rec["corpora"]) & set(heldout_from):
                fh.write(line)
                kept += 1
    if not kept:
        tmp.unlink()
        raise CorpusError(f"config key 'heldout_from': {heldout_from} hold none of the held-out documents")
    os.replace(tmp, path)
    _write_json(marker, want)
    return path


def _training_docs(inputs, split: _Split) -> Iterator:
    from data_pipeline.io.readers import iter_documents

    for doc in iter_documents(_files(inputs)):  # unreadable records were counted by stage 1
        if not split.is_heldout(doc.id, doc.text):
            yield doc


def _union_texts(corpora: dict, split: _Split, limit: int = 0) -> Iterator[str]:
    """Distinct training texts of every corpus; with `limit`, at most that many, one document from
    each corpus in turn (name order) so that every corpus shapes the vocabulary."""
    seen: set[bytes] = set()
    streams = [_training_docs(corpora[name], split) for name in sorted(corpora)]
    if not limit:
        streams = [itertools.chain.from_iterable(streams)]
    while streams:
        for stream in list(streams):
            doc = next(stream, None)
            if doc is None:
                streams.remove(stream)
                continue
            key = _text_key(doc.text)
            if key not in seen:
                seen.add(key)
                yield doc.text
                if limit and len(seen) >= limit:
                    return


def _prefix_done(prefix: Path, tokenizer: Path) -> dict | None:
    """The sidecar of a finished prefix tokenized with this tokenizer, else None."""
    from framework.data.shards import PrefixError, file_sha256, inspect_prefix, read_sidecar

    try:
        meta = read_sidecar(str(prefix))
        if meta is None or meta.get("tokenizer_sha256") != file_sha256(tokenizer):
            return None
        inspect_prefix(str(prefix))
    except PrefixError:
        return None
    return meta


def _tokenize(name: str, open_docs, identity: dict, tokenizer: Path, prefix: Path, workers: int) -> dict:
    from data_pipeline.tokens.tokenize import Source, tokenize_sources

    meta = _prefix_done(prefix, tokenizer)
    if meta is not None:
        log.info("tokens %s: done before (%s tokens), skipped", name, f"{meta['tokens']:,}")
        return meta
    # the reader ignores on_reject: stage 1 already counted and wrote the unreadable records
    stats = tokenize_sources(
        [Source(name, identity, lambda on_reject=None: open_docs())], str(tokenizer), str(prefix), workers=workers
    )
    log.info("tokens %s: %s documents, %s tokens", name, f"{stats.documents:,}", f"{stats.tokens:,}")
    return _prefix_done(prefix, tokenizer) or {"documents": stats.documents, "tokens": stats.tokens}


def prepare_corpora(
    corpora: dict[str, str | list[str]],
    data_dir: str | os.PathLike,
    vocab_size: int,
    heldout_fraction: float = 0.05,
    seed: int = 0,
    workers: int = 1,
    tokenizer_docs: int = 0,
    heldout_from: list[str] | None = None,
) -> PreparedCorpora:
    """Stages 1-3 above into `data_dir`; each skipped when its outputs are there. `tokenizer_docs`
    caps the documents the tokenizer trains on (0: every distinct training document);
    `heldout_from` names the corpora whose held-out texts are scored (None: all, the union)."""
    from data_pipeline.tokens.tokenizer import load_tokenizer, train_tokenizer

    if len(corpora) < 1:
        raise CorpusError("config key 'corpora': no corpora given")
    if not 0 < heldout_fraction < 1:
        raise CorpusError(f"config key 'heldout_fraction': expected (0, 1), got {heldout_fraction}")
    data_dir = Path(data_dir)
    settings = {
        "heldout_fraction": heldout_fraction,
        "seed": seed,
        "vocab_size": vocab_size,
        "tokenizer_docs": tokenizer_docs,
    }
    fingerprint = _fingerprint(corpora, settings)
    _check_fingerprint(data_dir, fingerprint)
    split, counts = _split(corpora, heldout_fraction, seed, data_dir)

    tokenizer = data_dir / "tokenizer.json"
    if not tokenizer.is_file():
        _, stats = train_tokenizer(_union_texts(corpora, split, tokenizer_docs), vocab_size, tokenizer)
        log.info("tokenizer: %s tokens from %s distinct training documents", stats.vocab_size, f"{stats.documents:,}")
    vocab = load_tokenizer(tokenizer).get_vocab_size(with_added_tokens=True)

    tokens_dir = data_dir / "tokens"
    prefixes, token_counts, documents = {}, {}, {}
    for name in sorted(corpora):
        prefix = tokens_dir / name
        identity = {"corpus": name, "inputs": fingerprint["inputs"][name], "split": settings}
        meta = _tokenize(
            name, lambda inputs=corpora[name]: _training_docs(inputs, split), identity, tokenizer, prefix, workers
        )
        prefixes[name], token_counts[name] = str(prefix), int(meta["tokens"])
        c = counts[name]
        documents[name] = {
            "read": c["read"],
            "train": int(meta["documents"]),
            "heldout": c["read"] - int(meta["documents"]),
            "rejected": sum(c["rejected"].values()),
        }
    unknown = sorted(set(heldout_from or ()) - set(corpora))
    if unknown:
        raise CorpusError(f"config key 'heldout_from': {unknown} not among the corpora ({sorted(corpora)})")
    eval_path = _eval_set(data_dir, list(heldout_from or corpora))
    held = _tokenize(
        HELDOUT,
        lambda: _read_heldout(eval_path),
        {"heldout": settings, "heldout_from": sorted(heldout_from or corpora)},
        tokenizer,
        tokens_dir / HELDOUT,
        workers,
    )
    prepared = PreparedCorpora(
        tokenizer=str(tokenizer),
        vocab_size=vocab,
        prefixes=prefixes,
        heldout=str(tokens_dir / HELDOUT),
        tokens=token_counts,
        documents=documents,
        heldout_documents=int(held["documents"]),
        heldout_tokens=int(held["tokens"]),
    )
    _write_json(data_dir / "prepared.json", prepared.to_dict())
    return prepared


def _read_heldout(path: Path) -> Iterator:
    from data_pipeline.io.readers import read_documents

    yield from read_documents(path)
