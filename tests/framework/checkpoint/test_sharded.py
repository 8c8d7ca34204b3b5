"""The anvil-sharded/1 storage library: layouts written by simulated TP x DP ranks read back under
any other layout, region or flat range; safetensors compatibility; errors; consolidation; legacy."""

from __future__ import annotations

import json
import random
import struct
import tracemalloc
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from framework.checkpoint import sharded
from framework.checkpoint.sharded import (
    FORMAT,
    IncompleteCheckpointError,
    Piece,
    ShardedReader,
    chunk_boxes,
    consolidate,
    open_checkpoint_tensors,
    write_shard,
)

SHAPES = {
    "blocks.0.attn.q_proj.weight": (7, 5),
    "blocks.0.mlp.up_proj.weight": (13, 6),
    "blocks.0.norm.weight": (13,),
    "embed.weight": (9, 4),
}
KINDS = ("fp32", "exp_avg", "exp_avg_sq")


def _full_tensors(seed: int = 0, dtype=torch.float32) -> dict[tuple[str, str], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {(n, k): torch.randn(shape, generator=g).to(dtype) for n, shape in SHAPES.items() for k in KINDS}


def _dp_ranges(numel: int, dp: int, rng: random.Random) -> list[tuple[int, int]]:
    cuts = sorted(rng.randint(0, numel) for _ in range(dp - 1))
    bounds = [0, *cuts, numel]
    return list(zip(bounds[:-1], bounds[1:]))


def _write_layout(folder: Path, tensors: dict, boxes_of, dp: int = 3, seed: int = 1) -> int:
    """Every (name, kind): TP boxes from `boxes_of(shape)`, each split into `dp` uneven flat ranges
    (empty ones skipped); piece of (tp rank t, dp rank d) goes to file rank_{t*dp+d}."""
    rng = random.Random(seed)
    files: dict[int, list] = {}
    for (name, kind), full in tensors.items():
        for t, box in enumerate(boxes_of(full.shape)):
            local = full[tuple(slice(s, s + n) for s, n in box)].flatten()
            for d, (a, b) in enumerate(_dp_ranges(local.numel(), dp, rng)):
                if a < b:
                    piece = Piece(name, kind, tuple(full.shape), box, (a, b))
                    files.setdefault(t * dp + d, []).append((piece, local[a:b].clone()))
    folder.mkdir(parents=True, exist_ok=True)
    for rank, items in files.items():
        write_shard(folder / f"rank_{rank:05d}.safetensors", items, metadata={"rank": rank, "step": "7"})
    return len(files)


def _tp(dim: int, parts: int):
    return lambda shape: chunk_boxes(shape, min(dim, len(shape) - 1), parts)


def _uneven(shape):
    """Arbitrary non-chunk boxes: a 2x2 grid with odd cut points (1-D: two uneven halves)."""
    if len(shape) == 1:
        return [((0, 2),), ((2, shape[0] - 2),)]
    r, c = shape[0] - 2, 1
    return [((0, r), (0, c)), ((0, r), (c, shape[1] - c)), ((r, 2), (0, c)), ((r, 2), (c, shape[1] - c))]


LAYOUTS = {"tp1": _tp(0, 1), "tp2_dim0": _tp(0, 2), "tp4_dim1": _tp(1, 4), "tp4_dim0": _tp(0, 4), "grid": _uneven}


@pytest.fixture
def saved(tmp_path):
    tensors = _full_tensors()
    _write_layout(tmp_path / "shards", tensors, LAYOUTS["tp2_dim0"])
    return tmp_path / "shards", tensors


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_whole_tensor_round_trip(tmp_path, layout):
    tensors = _full_tensors()
    _write_layout(tmp_path, tensors, LAYOUTS[layout])
    reader = ShardedReader(tmp_path)
    assert reader.keys() == sorted(tensors)
    assert reader.check_complete() == []
    for (name, kind), full in tensors.items():
        assert reader.shape(name, kind) == tuple(full.shape) and reader.dtype(name, kind) == torch.float32
        assert torch.equal(reader.read(name, kind), full)
        assert torch.equal(reader.read_full(name, kind), full)


@pytest.mark.parametrize("src", ["tp2_dim0", "tp4_dim1", "grid"])
@pytest.mark.parametrize("dst_dim,dst_tp", [(0, 4), (1, 2), (1, 4), (0, 3)])
def test_reshard_box_and_flat_range(tmp_path, src, dst_dim, dst_tp):
    tensors = _full_tensors()
    _write_layout(tmp_path, tensors, LAYOUTS[src])
    reader = ShardedReader(tmp_path)
    rng = random.Random(5)
    for (name, kind), full in tensors.items():
        for box in _tp(dst_dim, dst_tp)(full.shape):
            want = full[tuple(slice(s, s + n) for s, n in box)]
            assert torch.equal(reader.read(name, kind, box=box), want)
            for a, b in _dp_ranges(want.numel(), 3, rng):  # the reader's own DP partitions
                got = reader.read(name, kind, box=box, flat=(a, b))
                assert got.shape == (b - a,) and torch.equal(got, want.flatten()[a:b])


def test_random_regions_fuzz(tmp_path):
    tensors = _full_tensors(seed=3)
    _write_layout(tmp_path, tensors, LAYOUTS["grid"], dp=4, seed=9)
    reader = ShardedReader(tmp_path)
    rng = random.Random(11)
    for _ in range(300):
        (name, kind), full = rng.choice(list(tensors.items()))
        box = []
        for n in full.shape:
            s = rng.randint(0, n - 1)
            box.append((s, rng.randint(1, n - s)))
        want = full[tuple(slice(s, s + n) for s, n in box)].flatten()
        a = rng.randint(0, want.numel())
        b = rng.randint(a, want.numel())
        assert torch.equal(reader.read(name, kind, box=box, flat=(a, b)), want[a:b])


def test_bf16_round_trip_exact_and_cast(tmp_path):
    tensors = {(n, "param"): t for (n, k), t in _full_tensors(dtype=torch.bfloat16).items() if k == "fp32"}
    _write_layout(tmp_path, tensors, LAYOUTS["tp4_dim1"])
    reader = ShardedReader(tmp_path)
    for (name, kind), full in tensors.items():
        got = reader.read(name, kind)
        assert got.dtype == torch.bfloat16 and torch.equal(got.view(torch.int16), full.view(torch.int16))
        assert torch.equal(reader.read(name, kind, dtype=torch.float32), full.float())
    assert reader.names("param") == sorted(SHAPES) and reader.names("fp32") == []


def test_safe_open_reads_shard_files(saved):
    folder, tensors = saved
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            assert meta["format"] == FORMAT and json.loads(meta["rank"]) >= 0 and meta["step"] == "7"
            index = json.loads(meta[sharded.PIECES_KEY])
            assert sorted(d["key"] for d in index) == sorted(f.keys())
            for d in index:
                piece = Piece.from_json(d)
                data = f.get_tensor(d["key"])
                want = tensors[(piece.name, piece.kind)][piece.box_slices()].flatten()[slice(*piece.flat)]
                assert data.shape == (piece.numel,) and torch.equal(data, want)
    assert load_file(str(path))  # the safetensors loader accepts it too


def test_header_alignment_and_size(tmp_path):
    items = [(Piece.full("a", "fp32", (3,)), torch.ones(3)), (Piece.full("b", "param", (2, 1)), torch.ones(2).half())]
    n = write_shard(tmp_path / "x.safetensors", items, metadata={"note": "é"})
    raw = (tmp_path / "x.safetensors").read_bytes()
    hlen = struct.unpack("<Q", raw[:8])[0]
    assert hlen % 8 == 0 and n == len(raw) == 8 + hlen + 3 * 4 + 2 * 2
    header = json.loads(raw[8 : 8 + hlen])
    assert header["fp32/a/0"] == {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}
    assert header["param/b/1"]["dtype"] == "F16" and header["__metadata__"]["note"] == "é"
    with pytest.raises(ValueError, match="reserved"):
        write_shard(tmp_path / "y.safetensors", items, metadata={"format": "mine"})


def test_piece_json_round_trip_and_helpers():
    p = Piece("w", "exp_avg", (7, 5), ((2, 3), (0, 5)), (4, 11))
    assert Piece.from_json(json.loads(json.dumps(p.to_json()))) == p
    assert Piece("w", "exp_avg", torch.Size([7, 5]), [[2, 3], [torch.tensor(0), 5]], [4, 11]) == p
    assert p.numel == 7 and p.box_numel == 15 and p.box_shape == (3, 5)
    assert Piece.full("w", "fp32", (7, 5)) == Piece("w", "fp32", (7, 5), ((0, 7), (0, 5)), (0, 35))
    assert chunk_boxes((7, 5), 0, 2) == [((0, 4), (0, 5)), ((4, 3), (0, 5))]
    full = torch.arange(35).reshape(7, 5)
    assert [
        full[b].shape[1] for b in map(lambda b: tuple(slice(s, s + n) for s, n in b), chunk_boxes((7, 5), 1, 4))
    ] == [c.shape[1] for c in torch.chunk(full, 4, 1)]


@pytest.mark.parametrize(
    "piece,data,match",
    [
        (Piece("w", "fp32", (7, 5), ((0, 7), (0, 5)), (0, 10)), torch.zeros(9), "9 elements"),
        (Piece("w", "fp32", (7, 5), ((4, 4), (0, 5)), (0, 20)), torch.zeros(20), "not within the global shape"),
        (Piece("w", "fp32", (7, 5), ((0, 2), (0, 5)), (5, 11)), torch.zeros(6), "outside box"),
        (Piece("w", "adam", (3,), ((0, 3),), (0, 3)), torch.zeros(3), "unknown kind"),
    ],
)
def test_write_validates(tmp_path, piece, data, match):
    with pytest.raises(ValueError, match=match) as e:
        write_shard(tmp_path / "x.safetensors", [(piece, data)])
    assert "w" in str(e.value) and not (tmp_path / "x.safetensors").exists()


def test_missing_coverage_is_reported(saved):
    folder, tensors = saved
    # drop the DP-rank-1 file of TP rank 0: flat ranges inside the first box go missing
    victim = folder / "rank_00001.safetensors"
    lost = [Piece.from_json(d) for d in json.loads(safe_open(str(victim), "pt").metadata()[sharded.PIECES_KEY])]
    victim.unlink()
    reader = ShardedReader(folder)
    problems = reader.check_complete()
    assert len(problems) == len(lost)
    p = next(p for p in lost if p.name == "blocks.0.mlp.up_proj.weight" and p.kind == "exp_avg")
    msg = f"exp_avg of blocks.0.mlp.up_proj.weight: elements {p.flat[0]}-{p.flat[1] - 1} of box [0:7, 0:6]"
    with pytest.raises(IncompleteCheckpointError, match=msg.replace("[", r"\[")):
        reader.read(p.name, p.kind)
    assert any(msg in x and "missing from the checkpoint" in x for x in problems)
    # the second TP box is intact, so a region inside it still reads
    assert torch.equal(reader.read(p.name, p.kind, box=((7, 6), (0, 6))), tensors[(p.name, p.kind)][7:])


def test_missing_box_and_overlap(tmp_path):
    full = torch.randn(6, 4)
    top, bottom = chunk_boxes((6, 4), 0, 2)
    write_shard(tmp_path / "rank_00000.safetensors", [(Piece("w", "fp32", (6, 4), top, (0, 12)), full[:3].flatten())])
    reader = ShardedReader(tmp_path)
    with pytest.raises(IncompleteCheckpointError, match=r"fp32 of w: 12 of 24 elements of region \[0:6, 0:4\] missing"):
        reader.read("w", "fp32")
    assert torch.equal(reader.read("w", "fp32", box=top), full[:3])
    assert reader.check_complete() == ["fp32 of w: boxes cover 12 of 24 elements of shape (6, 4)"]
    overlap = Piece("w", "fp32", (6, 4), ((2, 4), (0, 4)), (0, 16))
    write_shard(tmp_path / "rank_00001.safetensors", [(overlap, full[2:].flatten())])
    with pytest.raises(IncompleteCheckpointError, match="overlap"):
        ShardedReader(tmp_path).read("w", "fp32")
    with pytest.raises(KeyError, match="exp_avg of w is not in the checkpoint"):
        reader.read("w", "exp_avg")


def test_flat_ranges_overlapping_rejected_identical_duplicates_tolerated(tmp_path):
    full = torch.randn(10)
    box = ((0, 10),)
    write_shard(
        tmp_path / "rank_00000.safetensors",
        [(Piece("w", "fp32", (10,), box, (0, 6)), full[:6]), (Piece("w", "fp32", (10,), box, (6, 10)), full[6:])],
    )
    write_shard(tmp_path / "rank_00001.safetensors", [(Piece("w", "fp32", (10,), box, (6, 10)), full[6:])])
    assert torch.equal(ShardedReader(tmp_path).read("w", "fp32"), full)
    write_shard(tmp_path / "rank_00002.safetensors", [(Piece("w", "fp32", (10,), box, (4, 8)), full[4:8])])
    with pytest.raises(IncompleteCheckpointError, match="saved twice"):
        ShardedReader(tmp_path).read("w", "fp32")


def test_flat_read_touches_only_needed_elements(tmp_path, monkeypatch):
    full = torch.randn(1000, 64)
    top, bottom = chunk_boxes(full.shape, 0, 2)
    items = []
    for box in (top, bottom):
        local = full[box[0][0] : box[0][0] + box[0][1]].flatten()
        for a, b in [(0, 10_000), (10_000, 25_001), (25_001, local.numel())]:
            items.append((Piece("w", "fp32", (1000, 64), box, (a, b)), local[a:b]))
    write_shard(tmp_path / "rank_00000.safetensors", items)
    reader = ShardedReader(tmp_path)
    fetched = []
    orig = ShardedReader._read_stored
    monkeypatch.setattr(
        ShardedReader, "_read_stored", lambda self, s, a, b: fetched.append(b - a) or orig(self, s, a, b)
    )
    got = reader.read("w", "fp32", box=bottom, flat=(9_990, 10_030))
    assert torch.equal(got, full[500:].flatten()[9_990:10_030])
    assert sum(fetched) <= 2 * 64  # the one or two rows holding the range, not the box


def test_consolidate_matches_full_tensors(saved, tmp_path):
    folder, tensors = saved
    reader = ShardedReader(folder)
    n = consolidate(
        reader,
        tmp_path / "model.safetensors",
        kind_preference=("param", "fp32"),
        metadata={"format": "anvil-checkpoint/1", "step": 7},
    )
    assert n == (tmp_path / "model.safetensors").stat().st_size
    loaded = load_file(str(tmp_path / "model.safetensors"))
    assert sorted(loaded) == sorted(SHAPES)
    for name in SHAPES:
        assert torch.equal(loaded[name], tensors[(name, "fp32")])
    consolidate(
        reader, tmp_path / "m.safetensors", kind_preference=("exp_avg",), dtype=torch.bfloat16, names=["embed.weight"]
    )
    loaded = load_file(str(tmp_path / "m.safetensors"))
    assert list(loaded) == ["embed.weight"] and torch.equal(
        loaded["embed.weight"], tensors[("embed.weight", "exp_avg")].bfloat16()
    )
    with pytest.raises(KeyError, match="none of the kinds"):
        consolidate(reader, tmp_path / "p.safetensors", kind_preference=("param",))


def test_legacy_folder(tmp_path):
    tensors = _full_tensors()
    weights = {n: tensors[(n, "fp32")] + 1 for n in SHAPES}
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "anvil-checkpoint/1"})
    reader = open_checkpoint_tensors(tmp_path)
    assert reader.keys() == sorted((n, "param") for n in SHAPES)
    save_file(
        {f"{k}.{n}": t for (n, k), t in tensors.items()},
        str(tmp_path / "optimizer.safetensors"),
        metadata={"format": sharded.LEGACY_FORMAT, "adam_step": "3"},
    )
    reader = open_checkpoint_tensors(tmp_path)
    assert reader.keys() == sorted([*tensors, *((n, "param") for n in SHAPES)])
    assert reader.metadata["optimizer.safetensors"]["adam_step"] == "3" and reader.check_complete() == []
    for (name, kind), full in tensors.items():
        assert torch.equal(reader.read(name, kind), full)
        box = chunk_boxes(full.shape, len(full.shape) - 1, 2)[1]
        want = full[tuple(slice(s, s + n) for s, n in box)].flatten()
        assert torch.equal(reader.read(name, kind, box=box, flat=(1, want.numel() - 1)), want[1:-1])
        assert torch.equal(reader.read(name, "param"), weights[name])
    # shards/ wins over the legacy files
    _write_layout(tmp_path / "shards", {k: v * 2 for k, v in tensors.items()}, LAYOUTS["tp2_dim0"])
    reader = open_checkpoint_tensors(tmp_path)
    assert isinstance(reader, ShardedReader) and reader.folder == tmp_path / "shards"
    assert torch.equal(reader.read("embed.weight", "fp32"), tensors[("embed.weight", "fp32")] * 2)


def test_missing_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        open_checkpoint_tensors(tmp_path)
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))  # not a shard file: ignored
    with pytest.raises(FileNotFoundError, match="no anvil-sharded/1 shard files"):
        ShardedReader(tmp_path)


def test_edge_shapes(tmp_path):
    scalar, empty = torch.tensor(2.5), torch.zeros(0, 3)
    write_shard(
        tmp_path / "rank_00000.safetensors",
        [(Piece.full("s", "fp32", ()), scalar.reshape(1)), (Piece.full("e", "fp32", (0, 3)), empty.reshape(-1))],
    )
    reader = ShardedReader(tmp_path)
    assert torch.equal(reader.read("s", "fp32"), scalar) and reader.read("e", "fp32").shape == (0, 3)
    assert reader.read("s", "fp32", flat=(0, 1)).tolist() == [2.5]
    assert reader.read("s", "fp32", flat=(1, 1)).shape == (0,)


def _status_kb(field: str) -> int:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field))


def test_writer_streams_without_a_full_copy(tmp_path):
    """Peak RSS while writing 64 MB stays far below 64 MB: no bytes copy, no torch.cat of the shard."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs")
    tensors = [torch.randn(2_000_000) for _ in range(8)]
    items = [(Piece.full(f"w{i}", "fp32", t.shape), t) for i, t in enumerate(tensors)]
    tracemalloc.start()
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kb("VmRSS:")
    try:
        write_shard(tmp_path / "big.safetensors", items)
        rss_growth = (_status_kb("VmHWM:") - base) * 1024
        py_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rss_growth < 16_000_000 and py_peak < 4_000_000, (rss_growth, py_peak)
    with safe_open(str(tmp_path / "big.safetensors"), framework="pt") as f:
        assert torch.equal(f.get_tensor("fp32/w7/7"), tensors[7])
