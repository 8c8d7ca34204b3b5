"""Sharded checkpoint storage ("anvil-sharded/1"): every rank writes only what it owns, any layout
reads back exactly the regions it needs.

A tensor is `(name, kind)`: a parameter name and one of `KINDS` (fp32 master weight, the two Adam
moments, the training-dtype weight). A saved *piece* is a rectangular `box` of the global tensor
(the tensor-parallel shard) and a contiguous `flat` range of that box's row-major flattening (the
ZeRO partition), stored as a 1-D tensor in a safetensors file whose `__metadata__` indexes the
pieces. Reading a region assembles each intersecting source box from its flat ranges, so TP degree,
split dimension, DP degree and ZeRO stage may all differ between writer and reader.

Why not `torch.distributed.checkpoint`: its chunk metadata is rectangular only, while ZeRO-1/2
partitions own uneven 1-D ranges of the flattened parameter, which are not rectangles. Why not
`megatron.core.dist_checkpointing`: 0.14+ dropped `ShardedTensor.flattened_range`, the only way it
had to describe such ranges. This module needs neither: it is plain torch + safetensors, no
`torch.distributed`, so a single process can read, verify or consolidate any checkpoint.

Memory: the writer computes the header from sizes, then streams one tensor at a time (no bytes copy
of the shard); a reader asking for a flat range narrows it to the dim-0 rows that hold it and reads
only those parts of the stored pieces (`get_slice`), so it never holds more than one source box.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

from framework.checkpoint.integrity import HashingWriter

FORMAT = "anvil-sharded/1"
LEGACY_FORMAT = "anvil-universal/1"
PIECES_KEY = "anvil_pieces"
KINDS = ("fp32", "exp_avg", "exp_avg_sq", "param")
MAX_HEADER = 100_000_000  # safetensors' own limit

Box = tuple[tuple[int, int], ...]
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    **{
        code: getattr(torch, attr)
        for code, attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"))
        if hasattr(torch, attr)
    },
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}


class IncompleteCheckpointError(ValueError):
    """Pieces of a tensor are missing or overlap, so the requested region cannot be read."""


@dataclass(frozen=True)
class Piece:
    """A saved part of tensor (`name`, `kind`): elements `flat[0]:flat[1]` of the row-major
    flattening of `box` (per dimension `(start, length)`) of the `global_shape` tensor."""

    name: str
    kind: str
    global_shape: tuple[int, ...]
    box: Box
    flat: tuple[int, int]

    def __post_init__(self) -> None:  # plain tuples of ints: hashable, JSON-able (not torch.Size / numpy ints)
        object.__setattr__(self, "global_shape", tuple(int(n) for n in self.global_shape))
        object.__setattr__(self, "box", tuple((int(s), int(n)) for s, n in self.box))
        object.__setattr__(self, "flat", (int(self.flat[0]), int(self.flat[1])))

    @classmethod
    def full(cls, name: str, kind: str, shape: Iterable[int]) -> Piece:
        shape = tuple(shape)
        return cls(name, kind, shape, tuple((0, n) for n in shape), (0, math.prod(shape)))

    @property
    def box_shape(self) -> tuple[int, ...]:
        return tuple(length for _, length in self.box)

    @property
    def box_numel(self) -> int:
        return math.prod(self.box_shape)

    @property
    def numel(self) -> int:
        return self.flat[1] - self.flat[0]

    def box_slices(self) -> tuple[slice, ...]:
        """Index of the box in the full tensor: `full[piece.box_slices()]`."""
        return _slices(self.box)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r} (expected one of {KINDS})")
        _check_box(self.box, self.global_shape, _label(self.name, self.kind))
        a, b = self.flat
        if not 0 <= a <= b <= self.box_numel:
            raise ValueError(
                f"{_label(self.name, self.kind)}: flat range {self.flat} outside box "
                f"{_fmt_box(self.box)} of {self.box_numel} elements"
            )

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "global_shape": list(self.global_shape),
            "box": [list(d) for d in self.box],
            "flat": list(self.flat),
        }

    @classmethod
    def from_json(cls, d: dict) -> Piece:
        return cls(d["name"], d["kind"], d["global_shape"], d["box"], d["flat"])


def chunk_boxes(shape: Iterable[int], dim: int, parts: int) -> list[Box]:
    """The boxes of `torch.chunk(full, parts, dim)` (possibly fewer than `parts`)."""
    shape = tuple(shape)
    size = -(-shape[dim] // parts) if shape[dim] else 0
    starts = range(0, shape[dim], size) if size else [0]
    full = tuple((0, n) for n in shape)
    return [full[:dim] + ((s, min(size, shape[dim] - s)),) + full[dim + 1 :] for s in starts]


def _label(name: str, kind: str) -> str:
    return f"{kind} of {name}"


def _slices(box: Box) -> tuple[slice, ...]:
    return tuple(slice(s, s + n) for s, n in box)


def _fmt_box(box: Box) -> str:
    return "[" + ", ".join(f"{s}:{s + n}" for s, n in box) + "]"


def _check_box(box: Box, shape: tuple[int, ...], label: str) -> None:
    if len(box) != len(shape) or any(s < 0 or n < 0 or s + n > d for (s, n), d in zip(box, shape)):
        raise ValueError(f"{label}: box {box} is not within the global shape {tuple(shape)}")


def _intersect(a: Box, b: Box) -> Optional[Box]:
    out = tuple((max(sa, sb), min(sa + na, sb + nb) - max(sa, sb)) for (sa, na), (sb, nb) in zip(a, b))
    return None if any(n <= 0 for _, n in out) else out


# ---------------------------------------------------------------------------------------- writing


@dataclass
class _Entry:
    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    produce: Callable[[], torch.Tensor]  # called once, just before the tensor's bytes are written


def _code(dtype: torch.dtype, what: str) -> str:
    if dtype not in _CODES:
        raise ValueError(f"{what}: dtype {dtype} cannot be stored in safetensors")
    return _CODES[dtype]


def _stream_safetensors(
    path: str | os.PathLike, entries: list[_Entry], metadata: dict[str, str], record: Optional[dict] = None
) -> int:
    """Write a safetensors file: header from the entries' sizes, then each tensor in turn. `record`,
    if given, receives the file's size and checksum, computed from the bytes as they are written."""
    if sys.byteorder != "little":
        raise RuntimeError("safetensors data is little-endian; big-endian hosts are not supported")
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for e in entries:
        size = math.prod(e.shape) * e.dtype.itemsize
        header[e.key] = {
            "dtype": _code(e.dtype, e.key),
            "shape": list(e.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    path = Path(path)
    try:
        with open(path, "wb") as raw:
            f = raw if record is None else HashingWriter(raw)
            f.write(struct.pack("<Q", len(blob)) + blob)
            for e in entries:
                _write_tensor(f, e)
            f.flush()
            os.fsync(f.fileno())
        if record is not None:
            record.update(f.record())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return 8 + len(blob) + offset


def _write_tensor(f, e: _Entry) -> None:
    t = e.produce().detach().to("cpu").contiguous()
    if t.dtype != e.dtype or t.numel() != math.prod(e.shape):
        raise ValueError(f"{e.key}: got {t.dtype} x {t.numel()}, header says {e.dtype} x {math.prod(e.shape)}")
    if t.numel():  # as_strided: a contiguous 1-element view may still carry a stride != 1
        f.write(memoryview(t.as_strided((t.numel(),), (1,)).view(torch.uint8).numpy()))


def _string_metadata(metadata: Optional[dict]) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}


def write_shard(
    path: str | os.PathLike,
    items: Iterable[tuple[Piece, torch.Tensor]],
    metadata: Optional[dict] = None,
    record: Optional[dict] = None,
) -> int:
    """Write the pieces this rank owns into one safetensors file; returns the bytes written.
    `record`, if given, receives the file's size and checksum (`framework.checkpoint.integrity`)."""

    def lazy():
        for piece, data in items:
            if data.numel() != piece.numel:
                raise ValueError(
                    f"{_label(piece.name, piece.kind)}: {data.numel()} elements for flat range "
                    f"{piece.flat} of {piece.numel}"
                )
            yield piece, data.dtype, lambda d=data: d.detach().reshape(-1)

    return write_shard_lazy(path, lazy(), metadata, record)


def write_shard_lazy(
    path: str | os.PathLike,
    items: Iterable[tuple[Piece, torch.dtype, Callable[[], torch.Tensor]]],
    metadata: Optional[dict] = None,
    record: Optional[dict] = None,
) -> int:
    """`write_shard` for data produced on demand: each `produce()` is called once, when its bytes are
    written, so a single-writer copy of a whole checkpoint holds one tensor in memory at a time.
    `produce` must return `piece.numel` elements of `dtype` (any shape)."""
    entries, index = [], []
    for i, (piece, dtype, produce) in enumerate(items):
        piece.validate()
        key = f"{piece.kind}/{piece.name}/{i}"
        entries.append(_Entry(key, dtype, (piece.numel,), produce))
        index.append({"key": key, **piece.to_json(), "dtype": _code(dtype, key)})
    meta = _string_metadata(metadata)
    if "format" in meta or PIECES_KEY in meta:
        raise ValueError(f"metadata keys 'format' and {PIECES_KEY!r} are reserved")
    meta.update({"format": FORMAT, PIECES_KEY: json.dumps(index, separators=(",", ":"))})
    return _stream_safetensors(path, entries, meta, record)


# ---------------------------------------------------------------------------------------- reading


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file (cheap: reads only the header bytes)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 0 < n <= MAX_HEADER:
            raise ValueError(f"{path}: not a safetensors file")
        return json.loads(f.read(n))


@dataclass(frozen=True)
class _Stored:
    piece: Piece
    path: Path
    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]  # as stored: 1-D for shard pieces, the full shape for legacy files


def _scan_shards(folder: Path) -> list[tuple[str, dict, list[_Stored]]]:
    """(file name, metadata, pieces) of every anvil-sharded/1 file in `folder`; other files are skipped."""
    files = []
    for path in sorted(folder.glob("*.safetensors")):
        meta = read_header(path).get("__metadata__") or {}
        if meta.get("format") == FORMAT:
            index = json.loads(meta.pop(PIECES_KEY))
            stored = [
                _Stored(p, path, d["key"], _DTYPES[d["dtype"]], (p.numel,)) for d in index for p in [Piece.from_json(d)]
            ]
            files.append((path.name, meta, stored))
    if not files:
        raise FileNotFoundError(f"no {FORMAT} shard files in {folder}")
    return files


def _scan_legacy(folder: Path) -> list[tuple[str, dict, list[_Stored]]]:
    """Full-box pieces: `optimizer.safetensors` (keys `KIND.NAME`) and `model.safetensors` (param)."""
    files = []
    for file in ("optimizer.safetensors", "model.safetensors"):
        if not (path := folder / file).exists():
            continue
        header = read_header(path)
        meta = header.pop("__metadata__", None) or {}
        if file.startswith("optimizer") and meta.get("format") != LEGACY_FORMAT:
            raise ValueError(f"{path}: format {meta.get('format')!r}, expected {LEGACY_FORMAT}")
        stored = []
        for key, info in header.items():
            kind, name = key.partition(".")[::2] if file.startswith("optimizer") else ("param", key)
            shape = tuple(info["shape"])
            stored.append(_Stored(Piece.full(name, kind, shape), path, key, _DTYPES[info["dtype"]], shape))
        files.append((file, meta, stored))
    return files


class ShardedReader:
    """Read any region of any tensor of a sharded checkpoint (`folder/*.safetensors`). Opening reads
    only the headers; files are memory-mapped (`safe_open`) on first read."""

    def __init__(self, folder: str | os.PathLike, _files: Optional[list] = None):
        self.folder = Path(folder)
        self.metadata: dict[str, dict[str, str]] = {}  # file name -> its metadata (piece index left out)
        self._index: dict[tuple[str, str], list[_Stored]] = {}
        self._handles: dict[Path, object] = {}
        for file, meta, stored in _scan_shards(self.folder) if _files is None else _files:
            self.metadata[file] = meta
            for s in stored:
                self._add(s)

    def _add(self, s: _Stored) -> None:
        s.piece.validate()
        tkey = (s.piece.name, s.piece.kind)
        first = self._index.setdefault(tkey, [s])[0]
        if first is not s:
            if (first.piece.global_shape, first.dtype) != (s.piece.global_shape, s.dtype):
                raise ValueError(
                    f"{_label(*tkey)}: pieces disagree on shape/dtype ({first.path.name}: "
                    f"{first.piece.global_shape} {first.dtype}, {s.path.name}: "
                    f"{s.piece.global_shape} {s.dtype})"
                )
            self._index[tkey].append(s)

    # -- catalogue
    def keys(self) -> list[tuple[str, str]]:
        return sorted(self._index)

    def names(self, kind: Optional[str] = None) -> list[str]:
        return sorted({n for n, k in self._index if kind is None or k == kind})

    def files(self) -> list[Path]:
        """The files the pieces are stored in."""
        return sorted({s.path for stored in self._index.values() for s in stored})

    def has(self, name: str, kind: str) -> bool:
        return (name, kind) in self._index

    def _stored(self, name: str, kind: str) -> list[_Stored]:
        if (name, kind) not in self._index:
            raise KeyError(f"{_label(name, kind)} is not in the checkpoint at {self.folder}")
        return self._index[(name, kind)]

    def shape(self, name: str, kind: str) -> tuple[int, ...]:
        return self._stored(name, kind)[0].piece.global_shape

    def dtype(self, name: str, kind: str) -> torch.dtype:
        return self._stored(name, kind)[0].dtype

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> ShardedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading
    def read_full(self, name: str, kind: str, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return self.read(name, kind, dtype=dtype)

    def read(
        self,
        name: str,
        kind: str,
        box: Optional[Iterable[Iterable[int]]] = None,
        flat: Optional[tuple[int, int]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> torch.Tensor:
        """Region `box` of the tensor (its shape), or elements `flat` of the box's flattening (1-D)."""
        label, shape = _label(name, kind), self.shape(name, kind)
        box = tuple((0, n) for n in shape) if box is None else tuple(tuple(int(x) for x in d) for d in box)
        _check_box(box, shape, label)
        numel = math.prod(n for _, n in box)
        a, b = (0, numel) if flat is None else (int(flat[0]), int(flat[1]))
        if not 0 <= a <= b <= numel:
            raise ValueError(f"{label}: flat range {flat} outside box {_fmt_box(box)} of {numel} elements")
        if flat is not None and a == b:
            return torch.empty(0, dtype=dtype or self.dtype(name, kind))
        rows, skip = _rows_covering(box, a, b) if flat is not None else (box, 0)
        out = torch.empty(tuple(n for _, n in rows), dtype=self.dtype(name, kind))
        if out.numel():
            self._fill(label, self._stored(name, kind), out, rows)
        if flat is not None:
            region = out.view(-1)[a - skip : b - skip]
            out = region.clone() if region.numel() != out.numel() else region
        return out if dtype is None else out.to(dtype)

    def _fill(self, label: str, stored: list[_Stored], out: torch.Tensor, rows: Box) -> None:
        hits = [
            (src, part, cut)
            for src, part in _group_by_box(stored).items()
            if (cut := _intersect(src, rows)) is not None
        ]
        _check_disjoint(label, [src for src, _, _ in hits])
        covered = sum(math.prod(n for _, n in cut) for _, _, cut in hits)
        if covered != out.numel():
            raise IncompleteCheckpointError(
                f"{label}: {out.numel() - covered} of {out.numel()} elements of "
                f"region {_fmt_box(rows)} missing from the checkpoint"
            )
        for src, part, cut in hits:
            _check_flat_cover(label, src, part)
            buf = self._assemble(src, part, cut[0] if cut else (0, 1))
            local = tuple(slice(s - ss, s - ss + n) for (s, n), (ss, _) in zip(cut[1:], src[1:]))
            target = tuple(slice(s - rs, s - rs + n) for (s, n), (rs, _) in zip(cut, rows))
            out[target] = buf[(slice(None),) + local] if cut else buf.reshape(())

    def _assemble(self, src: Box, part: list[_Stored], row_span: tuple[int, int]) -> torch.Tensor:
        """Rows `row_span` (global dim-0 start, length) of source box `src`, shaped like the box."""
        row = math.prod(n for _, n in src[1:])
        lo = (row_span[0] - (src[0][0] if src else 0)) * row
        hi = lo + row_span[1] * row
        buf = torch.empty(hi - lo, dtype=part[0].dtype)
        for flat, s in {s.piece.flat: s for s in reversed(part)}.items():  # first of identical duplicates
            a, b = max(flat[0], lo), min(flat[1], hi)
            if a < b:
                buf[a - lo : b - lo] = self._read_stored(s, a - flat[0], b - flat[0])
        return buf.view((row_span[1],) + tuple(n for _, n in src[1:]))

    def _read_stored(self, s: _Stored, a: int, b: int) -> torch.Tensor:
        """Elements a:b of the stored tensor's flattening, reading only the rows that hold them."""
        if s.path not in self._handles:
            from safetensors import safe_open

            self._handles[s.path] = safe_open(str(s.path), framework="pt")
        handle = self._handles[s.path]
        if len(s.shape) == 0:
            return handle.get_tensor(s.key).reshape(-1)[a:b]
        row = math.prod(s.shape[1:])
        r0, r1 = a // row, -(-b // row)
        return handle.get_slice(s.key)[r0:r1].reshape(-1)[a - r0 * row : b - r0 * row]

    def check_complete(self, keys: Optional[Iterable[tuple[str, str]]] = None) -> list[str]:
        """Problems found from the index alone: tensors (all, or `keys` = (name, kind) pairs present)
        whose pieces do not tile the global shape."""
        problems = []
        for name, kind in self.keys() if keys is None else sorted(keys):
            label, shape = _label(name, kind), self.shape(name, kind)
            groups = _group_by_box(self._stored(name, kind))
            try:
                _check_disjoint(label, list(groups))
                for src, part in groups.items():
                    _check_flat_cover(label, src, part)
                covered = sum(math.prod(n for _, n in src) for src in groups)
                if covered != math.prod(shape):
                    raise IncompleteCheckpointError(
                        f"{label}: boxes cover {covered} of {math.prod(shape)} elements of shape {shape}"
                    )
            except IncompleteCheckpointError as e:
                problems.append(str(e))
        return problems

    def check_files(self) -> list[str]:
        """Files shorter or longer than their headers say (a truncated copy, a partial write)."""
        problems = []
        for path in self.files():
            header = read_header(path)
            with open(path, "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
            end = max((info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"), default=0)
            size, expected = path.stat().st_size, 8 + n + end
            if size != expected:
                problems.append(f"{path}: {size} bytes, its header describes {expected} (truncated or corrupt copy)")
        return problems


def _rows_covering(box: Box, a: int, b: int) -> tuple[Box, int]:
    """The dim-0 slab of `box` holding its flat elements a:b, and the flat offset of that slab."""
    if not box:
        return box, 0
    row = math.prod(n for _, n in box[1:])
    r0, r1 = a // row, -(-b // row)
    return ((box[0][0] + r0, r1 - r0),) + box[1:], r0 * row


def _group_by_box(stored: list[_Stored]) -> dict[Box, list[_Stored]]:
    groups: dict[Box, list[_Stored]] = {}
    for s in stored:
        groups.setdefault(s.piece.box, []).append(s)
    return groups


def _check_disjoint(label: str, boxes: list[Box]) -> None:
    for i, x in enumerate(boxes):
        for y in boxes[i + 1 :]:
            if _intersect(x, y) is not None:
                raise IncompleteCheckpointError(f"{label}: boxes {_fmt_box(x)} and {_fmt_box(y)} overlap")


def _check_flat_cover(label: str, box: Box, part: list[_Stored]) -> None:
    """The flat ranges of one box cover it exactly once (identical duplicates are tolerated)."""
    numel, pos = math.prod(n for _, n in box), 0
    for a, b in sorted({s.piece.flat for s in part if s.piece.numel}):
        if a > pos:
            break
        if a < pos:
            raise IncompleteCheckpointError(
                f"{label}: elements {a}-{min(b, pos) - 1} of box {_fmt_box(box)} are saved twice, with different ranges"
            )
        pos = b
    if pos < numel:
        nxt = min([s.piece.flat[0] for s in part if s.piece.flat[0] > pos and s.piece.numel], default=numel)
        raise IncompleteCheckpointError(
            f"{label}: elements {pos}-{nxt - 1} of box {_fmt_box(box)} missing from the checkpoint"
        )


# ------------------------------------------------------------------------------ checkpoints, export


def open_checkpoint_tensors(ckpt_folder: str | os.PathLike) -> ShardedReader:
    """A reader for a checkpoint folder: its `shards/` if any, else the legacy full-size files."""
    folder = Path(ckpt_folder)
    shards = folder / "shards"
    if shards.is_dir() and any(shards.glob("*.safetensors")):
        return ShardedReader(shards)
    if (folder / "model.safetensors").exists() or (folder / "optimizer.safetensors").exists():
        return ShardedReader(folder, _files=_scan_legacy(folder))
    raise FileNotFoundError(f"{folder}: no shards/*.safetensors, model.safetensors or optimizer.safetensors")


def consolidate(
    reader: ShardedReader,
    out_path: str | os.PathLike,
    kind_preference: tuple[str, ...] = ("param", "fp32"),
    dtype: Optional[torch.dtype] = torch.float32,
    names: Optional[Iterable[str]] = None,
    metadata: Optional[dict] = None,
) -> int:
    """Write `{name: full tensor}` as plain safetensors, one tensor in memory at a time."""
    entries = []
    for name in reader.names() if names is None else list(names):
        kind = next((k for k in kind_preference if reader.has(name, k)), None)
        if kind is None:
            raise KeyError(f"{name}: none of the kinds {kind_preference} in the checkpoint at {reader.folder}")
        out_dtype = dtype or reader.dtype(name, kind)
        entries.append(
            _Entry(
                name,
                out_dtype,
                reader.shape(name, kind),
                lambda n=name, k=kind, d=out_dtype: reader.read_full(n, k, dtype=d),
            )
        )
    return _stream_safetensors(out_path, entries, _string_metadata(metadata))
