"""Atomic, resumable checkpoints: what a crash at any moment must never corrupt.

Layout of `RUN_DIR/checkpoints/`:
    latest                      text file naming the newest complete checkpoint, updated last
    step_00000100/
        anvil.json              metadata: step, consumed samples and tokens, layout, resolved config,
                                trainer state (skips, loss window, rollbacks), every file's checksum
        config.yaml             the resolved config (human-readable copy)
        shards/rank_00000.safetensors   what each rank owns of the weights, fp32 master weights and Adam
                                moments, with global offsets (`framework.checkpoint.universal` decides
                                ownership, `framework.checkpoint.sharded` stores and reshards)
        rng/rank_00000.pt       every RNG state of each rank (python, numpy, torch, cuda)

Every rank writes its own file in parallel; nothing but the files' checksums is gathered to rank 0,
and no full copy of the model exists anywhere (`anvil checkpoint consolidate` makes one on demand).
Loading under any layout reads only the slices each rank needs. Checkpoints of earlier versions (`model.safetensors`,
`optimizer.safetensors`, `ds/`) still load: the reader presents their files as whole-tensor pieces.

Everything is written into `step_X.tmp-<nonce>/` and renamed into place by rank 0 after a barrier;
`latest` is replaced (write temp + os.replace) only after that, then old checkpoints beyond
`keep` are deleted. A kill at any point leaves the previous checkpoint and `latest` intact.
`write_full` / `write_folder` do the same from one process, without a process group, for tools that
hold full tensors (`anvil import hf`, `anvil checkpoint convert`): one shard of full pieces.
Every `torch.load` here and in DeepSpeed's checkpoint engine runs with `weights_only=True` and a
short allowlist of DeepSpeed's own plain classes, so a malicious pickle is refused.

Integrity: every rank hashes its shard while streaming it to disk (and its rng file); rank 0
gathers the records and seals them into `anvil.json` (`integrity.files`: size and checksum per
file, `integrity.metadata`: a checksum of anvil.json itself; `framework.checkpoint.integrity`).
`select_checkpoint` (what training resumes and rolls back from) verifies the newest checkpoint
before using it, each rank hashing 1/world of the files, and falls back to the previous one, with
a warning naming the bad file, when a file is missing, truncated or changed. Checkpoints without
an `integrity` section (earlier versions) are checked only for shard files shorter than their
headers say.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from framework.checkpoint import integrity
from framework.runtime import get_logger

log = get_logger("anvil.checkpoint")

FORMAT = "anvil-checkpoint/1"
LATEST = "latest"
SHARDS = "shards"


class CheckpointError(ValueError):
    pass


def _ds_safe_globals() -> list:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    return [LossScaler, DynamicLossScaler, ZeroStageEnum]


def safe_torch_load(path: str | os.PathLike, map_location=None):
    """torch.load with weights_only=True; DeepSpeed's plain state classes are allowlisted."""
    try:
        with torch.serialization.safe_globals(_ds_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: refused to load (weights_only=True): {str(exc).splitlines()[0]}") from exc


def make_ds_loads_safe(ds_engine) -> None:
    """Route DeepSpeed's checkpoint reads through `safe_torch_load` (it uses weights_only=False)."""
    ce = ds_engine.checkpoint_engine
    ce.load = lambda path, map_location=None: safe_torch_load(path, map_location)


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    root = Path(root)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "anvil.json").is_file():
        raise CheckpointError(f"{pointer} names {path.name}, which is not a complete checkpoint")
    return path


def resolve(path: str | os.PathLike) -> Path:
    """A run folder, its checkpoints/ folder or one checkpoint -> one checkpoint folder."""
    p = Path(path)
    if (p / "anvil.json").is_file():
        return p
    for root in (p / "checkpoints", p):
        if (root / LATEST).is_file():
            found = latest_checkpoint(root)
            if found is not None:
                return found
    raise CheckpointError(
        f"{path}: no checkpoint found (expected a run folder, its checkpoints/ folder, "
        "or a checkpoint folder containing anvil.json)"
    )


def read_meta(ckpt: str | os.PathLike) -> dict:
    path = Path(ckpt) / "anvil.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: invalid JSON or UTF-8 (a flipped bit)
        raise CheckpointError(f"{path}: unreadable checkpoint metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: expected format {FORMAT!r}, got {meta.get('format')!r}")
    return meta


def verify(ckpt: str | os.PathLike, part: int = 0, parts: int = 1) -> list[str]:
    """Problems with checkpoint `ckpt`, one line each naming the file; empty when it is intact.

    Checks anvil.json against its own checksum, every recorded file's size (a stat), shard files
    nobody recorded, and the checksums of the recorded files `i` with `i % parts == part` (sorted by
    path): `parts` ranks calling it with their rank as `part` together read every file once. A
    checkpoint without an `integrity` section (an earlier version) is checked for shard files
    shorter or longer than their headers say."""
    ckpt = Path(ckpt)
    try:
        meta = read_meta(ckpt)
    except CheckpointError as exc:
        return [str(exc)]
    if "integrity" not in meta:
        return _verify_legacy(ckpt)
    problem = integrity.check_metadata(meta, str(ckpt / "anvil.json"))
    if problem is not None:
        return [problem]  # the file records themselves may be wrong
    files = sorted((meta["integrity"].get("files") or {}).items())
    problems = []
    for i, (rel, rec) in enumerate(files):
        check = integrity.check_file if i % parts == part else integrity.check_size
        problem = check(ckpt / rel, rec)
        if problem is not None:
            problems.append(problem)
    recorded = {rel for rel, _ in files}
    problems += [
        f"{f}: a shard file the checkpoint does not record"
        for f in sorted((ckpt / SHARDS).glob("*"))
        if f.relative_to(ckpt).as_posix() not in recorded
    ]
    return problems


def _verify_legacy(ckpt: Path) -> list[str]:
    try:
        with tensors(ckpt) as reader:
            return reader.check_files()
    except (CheckpointError, OSError, ValueError, KeyError) as exc:
        return [f"{ckpt}: {str(exc).splitlines()[0]}"]


def _candidates(root: Path) -> list[Path]:
    """Checkpoints to try, newest first: the one `latest` names, then every older complete one."""
    done = sorted((p for p in root.glob("step_*") if p.is_dir() and ".tmp-" not in p.name), reverse=True)
    try:
        name = (root / LATEST).read_text().strip()
    except (OSError, ValueError):  # unreadable pointer: try every checkpoint
        name = ""
    if not name or "/" in name or ".tmp-" in name:
        return done
    older = [p for p in done if p.name < name] if name.startswith("step_") else done
    return [root / name] + [p for p in older if p.name != name]


def select_checkpoint(root: str | os.PathLike) -> Path | None:
    """The checkpoint under `root` (a run's checkpoints/ folder) to resume from; None when `latest`
    does not exist (a new run). Collective (every rank calls it; each hashes 1/world of the files).

    The newest checkpoint is verified (`verify`); when it is corrupt, truncated or missing a file,
    a warning names the problem and the previous checkpoint is tried, and so on. When none is
    usable a CheckpointError names them all: never a silent start from scratch."""
    import torch.distributed as dist

    root = Path(root)
    if not (root / LATEST).is_file():
        return None
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    rejected = []
    for ckpt in _candidates(root):
        problems = [p for part in _all_gather(verify(ckpt, rank, world)) for p in part]
        if not problems:
            if rejected and rank == 0:
                log.warning("using %s, the newest intact checkpoint", ckpt)
            return ckpt
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        if rank == 0:
            log.warning(
                "checkpoint %s is unusable: %s%s; falling back to the previous checkpoint", ckpt, problems[0], more
            )
        rejected.append(f"{ckpt.name}: {problems[0]}{more}")
    raise CheckpointError(
        f"{root}: no usable checkpoint ({'; '.join(rejected) or 'none found'}); restore one "
        f"from a copy, or remove {root / LATEST} to start this run from scratch"
    )


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[0],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((state["python_pos"], tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def _broadcast_str(value: str | None) -> str:
    import torch.distributed as dist

    if not dist.is_initialized():
        return value or ""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def save(
    root: str | os.PathLike,
    step: int,
    engine,
    meta: dict,
    keep: int,
    config_yaml: str,
    after_write=None,
    stats: dict | None = None,
) -> Path:
    """Write checkpoint `step` atomically (collective: every rank calls it, each writes its shard).

    `stats`, if given, receives this rank's `bytes` written and `seconds` spent."""
    from framework.checkpoint import universal

    started = time.perf_counter()
    rank = int(os.environ.get("RANK", "0"))
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / _broadcast_str(f"{final.name}.tmp-{os.getpid()}-{time.time_ns()}" if rank == 0 else None)
    if rank == 0:
        (tmp / SHARDS).mkdir(parents=True)
        (tmp / "rng").mkdir()
    _barrier()
    shard, rng = f"{SHARDS}/rank_{rank:05d}.safetensors", f"rng/rank_{rank:05d}.pt"
    files: dict = {shard: {}}
    written = universal.save_shard(engine, tmp / shard, record=files[shard])
    buf = io.BytesIO()
    torch.save(rng_state(), buf)
    files[rng] = integrity.write_bytes(tmp / rng, buf.getvalue())
    files = {k: v for part in _all_gather(files) for k, v in part.items()}  # every rank's records
    if rank == 0:
        files["config.yaml"] = integrity.write_bytes(tmp / "config.yaml", config_yaml.encode())
        full_meta = {"format": FORMAT, "tensors": "anvil-sharded/1", "adam_step": universal.adam_step(engine), **meta}
        _write_meta(tmp, full_meta, files)
    if after_write is not None:
        after_write(tmp)  # fault-injection point for tests: everything written, nothing published
    _barrier()
    if rank == 0:
        _publish(tmp, final, keep)
    _barrier()
    if stats is not None:
        stats.update(bytes=written, seconds=time.perf_counter() - started)
    return final


def _all_gather(obj) -> list:
    """`obj` of every rank, in rank order (a one-element list without a process group)."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _write_meta(folder: Path, meta: dict, files: dict) -> None:
    """anvil.json: `meta` sealed with the file records (`integrity`)."""
    sealed = integrity.seal({k: v for k, v in meta.items() if k != "integrity"}, files)
    (folder / "anvil.json").write_text(json.dumps(sealed, indent=2, sort_keys=True))


def _publish(tmp: Path, final: Path, keep: int | None) -> None:
    """Rename the written `tmp` folder to `final`, then point `latest` at it, then prune (keep-last-k)."""
    if final.exists():  # a rerun that reached the same step again: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    publish_latest(final)
    if keep is not None:
        _prune(final.parent, keep)


def publish_latest(ckpt: str | os.PathLike) -> None:
    """Point `latest` in the checkpoint's parent folder at it (write a temp file, then os.replace)."""
    ckpt = Path(ckpt)
    pointer_tmp = ckpt.parent / f".{LATEST}.tmp"
    pointer_tmp.write_text(ckpt.name + "\n")
    os.replace(pointer_tmp, ckpt.parent / LATEST)


def _write_single(tmp: Path, items, meta: dict, config_yaml: str | None, adam_step: int) -> None:
    from framework.checkpoint.sharded import FORMAT as TENSORS_FORMAT, write_shard_lazy

    def lazy():
        for item in items:
            if len(item) == 3:
                yield item
                continue
            piece, data = item
            if data.numel() != piece.numel:
                raise ValueError(f"{piece.kind} of {piece.name}: {data.numel()} elements for {piece.numel}")
            yield piece, data.dtype, (lambda d=data: d.detach().reshape(-1))

    (tmp / SHARDS).mkdir(parents=True)
    shard = f"{SHARDS}/rank_00000.safetensors"
    files: dict = {shard: {}}
    write_shard_lazy(tmp / shard, lazy(), record=files[shard])
    if config_yaml is not None:
        files["config.yaml"] = integrity.write_bytes(tmp / "config.yaml", config_yaml.encode())
    full_meta = {**meta, "format": FORMAT, "tensors": TENSORS_FORMAT, "adam_step": int(adam_step)}
    _write_meta(tmp, full_meta, files)


def write_folder(
    out: str | os.PathLike, items, meta: dict, config_yaml: str | None, adam_step: int = 0, replace: bool = False
) -> Path:
    """Write a complete checkpoint folder `out` from one process: one shard holding `items`, then
    `anvil.json` and `config.yaml`; atomic (written as a sibling `OUT.tmp-*` folder, renamed last).

    `items`: (Piece, tensor) pairs, or (Piece, dtype, produce) triples whose `produce()` is called
    once, when its bytes are written (one tensor in memory at a time). Not collective: no barrier, no
    process group. Does not touch `latest` (see `publish_latest`, `write_full`). An existing
    non-empty `out` is refused unless `replace`."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not replace:
        raise CheckpointError(f"{out}: exists and is not empty")
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}-{time.time_ns()}")
    try:
        _write_single(tmp, items, meta, config_yaml, adam_step)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_full(
    root: str | os.PathLike,
    step: int,
    items,
    meta: dict,
    config_yaml: str | None,
    adam_step: int = 0,
    keep: int | None = None,
) -> Path:
    """Single-writer `save`: checkpoint `step` under `root` (items as in `write_folder`), published
    as `save` publishes (folder renamed into place, then `latest`, then keep-last-`keep` if given).
    For tools that hold the whole model in one process (`anvil import hf`)."""
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f"{final.name}.tmp-{os.getpid()}-{time.time_ns()}"
    try:
        _write_single(tmp, items, meta, config_yaml, adam_step)
        _publish(tmp, final, keep)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def saved_adam_step(ckpt: str | os.PathLike, meta: dict | None = None) -> int:
    """Adam's step count stored with a checkpoint (0 when it holds no optimizer state)."""
    meta = read_meta(ckpt) if meta is None else meta
    return int(meta["adam_step"]) if "adam_step" in meta else _legacy_adam_step(Path(ckpt))


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir() and ".tmp-" not in p.name)
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("step_*.tmp-*"):  # leftovers of runs killed mid-write
        shutil.rmtree(stale, ignore_errors=True)


def _saved_layout(meta: dict) -> tuple:
    par = meta.get("config", {}).get("parallel", {})
    return (
        meta.get("world_size"),
        meta.get("dp_size"),
        par.get("tensor", 1),
        par.get("pipeline", 1),
        meta.get("zero_stage"),
    )


def _engine_layout(engine) -> tuple:
    import torch.distributed as dist

    par = engine.cfg.parallel
    world = dist.get_world_size() if dist.is_initialized() else 1
    return world, engine.dp_size, par.tensor, par.pipeline, par.zero_stage


def tensors(ckpt: str | os.PathLike):
    """A `ShardedReader` over a checkpoint's tensors (sharded, or an earlier version's full files)."""
    from framework.checkpoint.sharded import open_checkpoint_tensors

    try:
        return open_checkpoint_tensors(Path(ckpt))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{ckpt}: no tensors found ({exc})") from exc


def load(ckpt: str | os.PathLike, engine) -> dict:
    """Restore weights, fp32 masters, Adam moments and (same layout) this rank's RNG; return metadata.

    Collective only in that every rank calls it; each reads the slices it holds under its layout."""
    from framework.checkpoint import universal

    ckpt = Path(ckpt)
    meta = read_meta(ckpt)
    rank = int(os.environ.get("RANK", "0"))
    reader = tensors(ckpt)
    try:
        universal.load(engine, reader, saved_adam_step(ckpt, meta))
    finally:
        reader.close()
    rng_file = ckpt / "rng" / f"rank_{rank:05d}.pt"
    if rng_file.is_file() and _saved_layout(meta) == _engine_layout(engine):
        set_rng_state(safe_torch_load(rng_file))
    _barrier()
    return meta


def _legacy_adam_step(ckpt: Path) -> int:
    """Adam's step of a checkpoint written before sharded checkpoints (in optimizer.safetensors)."""
    from safetensors import safe_open

    opt = ckpt / "optimizer.safetensors"
    if not opt.is_file():
        return 0
    with safe_open(str(opt), framework="pt") as f:
        return int((f.metadata() or {}).get("adam_step", 0))


def load_weights(ckpt: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Layout-free read of one checkpoint: (full fp32 state dict, metadata). No DeepSpeed needed.

    For tools that hold the whole model anyway (export, generate, single-process eval); training
    never calls it."""
    ckpt = resolve(ckpt)
    meta = read_meta(ckpt)
    with tensors(ckpt) as reader:
        kinds = ("param", "fp32")
        names = sorted({n for k in kinds for n in reader.names(k)})
        out = {}
        for name in names:
            kind = next(k for k in kinds if reader.has(name, k))
            out[name] = reader.read(name, kind, dtype=torch.float32)
    return out, meta
