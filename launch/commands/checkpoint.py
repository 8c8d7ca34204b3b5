"""`anvil checkpoint consolidate|convert|info|verify`: offline tools for sharded checkpoints.

A checkpoint (`step_XXXXXXXX/`) holds `anvil.json`, `config.yaml`, `shards/rank_*.safetensors` (the
pieces of the weights, fp32 masters and Adam moments each training rank owned, with global offsets)
and `rng/`. Training resumes from it under any layout by reading only the slices each rank needs,
so none of these commands is needed to change the layout. They run in one process, without
DeepSpeed or a process group, and stream one tensor at a time (`framework.checkpoint.sharded`):

- `consolidate` writes the layout-free weights as one plain `model.safetensors` (+ `config.yaml`,
  `anvil.json`): for scripts and tools that want one file; the folder also works as `--checkpoint`
  of `anvil export hf`, `anvil generate` and `anvil eval`.
- `convert` writes a new checkpoint with a single shard of full tensors: a compact copy that does
  not depend on the number of ranks that wrote it, optionally without optimizer state; it also
  upgrades checkpoints of earlier versions (`model.safetensors` + `optimizer.safetensors` + `ds/`).
- `info` summarises a checkpoint, `verify` checks it is complete and intact (exit status).
Checkpoints of earlier versions are read by all four.
"""

from __future__ import annotations

import argparse

from launch.cli import Command

WEIGHT_KINDS = ("param", "fp32")  # the model's weights: the training-dtype copy if any, else the fp32 master
MOMENTS = ("exp_avg", "exp_avg_sq")
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

CONSOLIDATE_HELP = """Write the checkpoint's weights as one layout-free file, DIR/model.safetensors (the
model's own parameter names, full tensors, streamed one tensor at a time), plus DIR/config.yaml and
DIR/anvil.json (the checkpoint's metadata, marked as consolidated). Weights are the ones the model
computed with: the bf16/fp16 copy of a bf16/fp16 run (as fp32 unless --dtype), the fp32 master
weights otherwise (--masters: always the fp32 masters). A tied output head is not stored (it is
embed.tok.weight). DIR is itself readable as a weights-only checkpoint by `anvil export hf`,
`anvil generate` and `anvil eval`; use `anvil checkpoint convert` for a copy training resumes from.

  anvil checkpoint consolidate runs/tiny --output runs/tiny-weights
  python -c "from safetensors.torch import load_file; print(list(load_file('runs/tiny-weights/model.safetensors'))[:3])"
"""

CONVERT_HELP = """Write a new checkpoint folder holding one shard of full tensors: the fp32 master weights,
both Adam moments (unless --weights-only), and the bf16/fp16 weights of a bf16/fp16 run, plus
anvil.json (recording converted_from) and config.yaml; no rng/. Streams one tensor at a time.

Training already resumes from any checkpoint under any layout (earlier versions included), so this
is not needed for that. Use it for a compact copy that does not depend on the number of ranks that
wrote it (one file to archive or ship), to drop the optimizer state (--weights-only: about a third
of the size in fp32; Adam moments restart from zero and Adam's step from 0 on resume), or to upgrade
a checkpoint of an earlier version to the sharded format.

  anvil checkpoint convert runs/tiny --output runs/tiny-any/checkpoints/step_00000200 --publish
  anvil train configs/train/tiny.yaml run_dir=runs/tiny-any train.steps=400
"""

INFO_HELP = """Print what a checkpoint holds: step and data position, the layout and precision it was
saved with, its format (sharded, or an earlier version), the number of shard files and their sizes,
tensors per kind, whether every tensor is complete and whether it carries optimizer state.

  anvil checkpoint info runs/tiny
  anvil checkpoint info runs/tiny/checkpoints/step_00000200 --json
"""

VERIFY_HELP = """Check that a checkpoint is usable: anvil.json readable and matching its own checksum, every
file the checkpoint records present with its recorded size and checksum (xxh3_64, or blake2b_64
without the xxhash package: reads every file once, about 10 GB/s of hashing with xxh3_64), every
shard file as long as its header says, the pieces of every tensor tile it exactly, every parameter
of the model in anvil.json present with its shape, Adam moments for all weights or none. Exits 0
and prints `ok` when so; otherwise exits 1 naming the first problem (a file, or the tensor and the
missing elements). Checkpoints written before checksums were recorded are checked without them.

  anvil checkpoint verify runs/tiny && echo usable
"""


def _fail(cmd: str, msg: str) -> SystemExit:
    return SystemExit(f"anvil checkpoint {cmd}: {msg}")


def _open(path: str, cmd: str):
    """(checkpoint folder, metadata, reader); any problem is a one-line SystemExit."""
    from framework.checkpoint import store

    try:
        ckpt = store.resolve(path)
        meta = store.read_meta(ckpt)
        reader = store.tensors(ckpt)
    except (store.CheckpointError, FileNotFoundError, ValueError, KeyError) as exc:
        raise _fail(cmd, str(exc).splitlines()[0]) from None
    return ckpt, meta, reader


def _first(problems: list[str]) -> str:
    return problems[0] + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else "")


def _weight_names(reader, kinds=WEIGHT_KINDS) -> list[str]:
    return sorted({n for k in kinds for n in reader.names(k)})


def _is_sharded(ckpt) -> bool:
    return (ckpt / "shards").is_dir() and any((ckpt / "shards").glob("*.safetensors"))


def _folder_size(folder) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


# ----------------------------------------------------------------------------------- consolidate


def _consolidate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="a checkpoint folder (step_XXXXXXXX) or a run folder (its latest checkpoint)",
    )
    p.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="folder to write model.safetensors, config.yaml and anvil.json into (created; "
        "replaced if it holds an earlier consolidation, refused if it holds anything else)",
    )
    p.add_argument(
        "--dtype", choices=sorted(DTYPES), default="fp32", help="dtype of the written tensors (default fp32)"
    )
    p.add_argument(
        "--masters",
        action="store_true",
        help="write the fp32 master weights even for a bf16/fp16 run (default: the weights the "
        "model computed with, which is what export/eval/generate use)",
    )


def _consolidate(args: argparse.Namespace) -> int:
    import json
    import os
    import shutil
    from pathlib import Path

    import torch

    from framework.checkpoint import sharded

    ckpt, meta, reader = _open(args.checkpoint, "consolidate")
    out = Path(args.output)
    if out.resolve() == ckpt.resolve() or ckpt.resolve() in out.resolve().parents:
        raise _fail("consolidate", f"--output {out}: inside the checkpoint {ckpt}; choose another folder")
    if out.exists() and not out.is_dir():
        raise _fail("consolidate", f"--output {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        try:
            earlier = "consolidated_from" in json.loads((out / "anvil.json").read_text())
        except (OSError, ValueError):
            earlier = False
        if not earlier:
            raise _fail(
                "consolidate",
                f"--output {out}: exists, is not empty and is not an earlier consolidation; refusing to overwrite",
            )
    with reader:
        names = _weight_names(reader)
        if not names:
            raise _fail("consolidate", f"{ckpt}: no weights in the checkpoint (kinds {', '.join(WEIGHT_KINDS)})")
        kinds = ("fp32",) if args.masters else WEIGHT_KINDS
        chosen = {}
        for name in names:
            kind = next((k for k in kinds if reader.has(name, k)), None)
            if kind is None:
                raise _fail(
                    "consolidate",
                    f"{ckpt}: no fp32 master weight for {name} (the checkpoint holds "
                    "only its training-dtype copy); drop --masters",
                )
            chosen[name] = kind
        problems = reader.check_complete(chosen.items())
        if problems:
            raise _fail("consolidate", f"{ckpt}: {_first(problems)}")
        dtype = getattr(torch, DTYPES[args.dtype])
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".model.safetensors.tmp-{os.getpid()}"
        used = sorted(set(chosen.values()))
        try:
            size = sharded.consolidate(
                reader,
                tmp,
                kind_preference=kinds,
                dtype=dtype,
                names=names,
                metadata={"format": "pt", "anvil_step": str(meta.get("step")), "anvil_kind": ",".join(used)},
            )
            os.replace(tmp, out / "model.safetensors")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    if (ckpt / "config.yaml").is_file():
        shutil.copyfile(ckpt / "config.yaml", out / "config.yaml")
    info = {k: v for k, v in meta.items() if k not in ("adam_step", "tensors", "integrity")}
    info.update(
        tensors="consolidated", consolidated_from=str(ckpt.resolve()), weights_kind=",".join(used), dtype=args.dtype
    )
    (out / "anvil.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    print(
        f"wrote {out / 'model.safetensors'}: {len(names)} tensors, {size / 1e6:.1f} MB, step {meta.get('step')} "
        f"({'/'.join(used)} weights as {args.dtype}); config.yaml and anvil.json beside it"
    )
    return 0


# --------------------------------------------------------------------------------------- convert


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="a checkpoint folder (step_XXXXXXXX) or a run folder (its latest); any version",
    )
    p.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="the new checkpoint folder (must not exist or be empty); name it "
        "RUN/checkpoints/step_XXXXXXXX and pass --publish to resume training from it",
    )
    p.add_argument(
        "--weights-only",
        action="store_true",
        help="keep only the weights: no Adam moments (a third of the size of an fp32 run's); training "
        "resumed from the copy restarts the moments from zero and Adam's step from 0. Needed "
        "for a source without optimizer state",
    )
    p.add_argument(
        "--publish",
        action="store_true",
        help="also point `latest` in the output's parent folder at it, so a run whose run_dir is "
        "the grandparent resumes from it",
    )


def _convert_items(reader, names: list[str], weights_only: bool, where: str):
    """(Piece, dtype, produce) of every full tensor the converted checkpoint holds."""
    import torch

    from framework.checkpoint.sharded import Piece

    items = []
    for name in names:
        src = "fp32" if reader.has(name, "fp32") else "param"  # an earlier version's model.safetensors only
        shape = reader.shape(name, src)
        items.append(
            (
                Piece.full(name, "fp32", shape),
                torch.float32,
                lambda n=name, k=src: reader.read_full(n, k, dtype=torch.float32),
            )
        )
        if reader.has(name, "param") and reader.dtype(name, "param") != torch.float32:
            items.append(
                (
                    Piece.full(name, "param", shape),
                    reader.dtype(name, "param"),
                    lambda n=name: reader.read_full(n, "param"),
                )
            )
        if not weights_only:
            for kind in MOMENTS:
                if not reader.has(name, kind):
                    raise _fail(
                        "convert",
                        f"{where}: no {kind} of {name} (no optimizer state); pass "
                        "--weights-only to restart the Adam moments from zero",
                    )
                items.append(
                    (
                        Piece.full(name, kind, reader.shape(name, kind)),
                        torch.float32,
                        lambda n=name, k=kind: reader.read_full(n, k, dtype=torch.float32),
                    )
                )
    return items


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from framework.checkpoint import store

    src, meta, reader = _open(args.checkpoint, "convert")
    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise _fail("convert", f"--output {out}: exists and is not empty")
    with reader:
        names = _weight_names(reader)
        if not names:
            raise _fail("convert", f"{src}: no weights in the checkpoint")
        items = _convert_items(reader, names, args.weights_only, str(src))
        kinds = WEIGHT_KINDS if args.weights_only else (*WEIGHT_KINDS, *MOMENTS)
        keys = [(name, kind) for name in names for kind in kinds if reader.has(name, kind)]
        problems = reader.check_complete(keys)
        if problems:
            raise _fail("convert", f"{src}: {_first(problems)}")
        adam_step = 0 if args.weights_only else store.saved_adam_step(src, meta)
        new_meta = {k: v for k, v in meta.items() if k not in ("format", "tensors", "adam_step")}
        new_meta["converted_from"] = str(src.resolve())
        if args.weights_only:
            new_meta["weights_only"] = True
        config = (src / "config.yaml").read_text() if (src / "config.yaml").is_file() else None
        try:
            store.write_folder(out, items, new_meta, config, adam_step=adam_step)
        except (store.CheckpointError, ValueError, KeyError) as exc:
            raise _fail("convert", str(exc).splitlines()[0]) from None
    if args.publish:
        store.publish_latest(out)
    print(
        f"wrote checkpoint {out} (step {meta.get('step')}, one shard, {_folder_size(out) / 1e6:.1f} MB, "
        f"{'weights only: Adam restarts from zero' if args.weights_only else f'with Adam state, step {adam_step}'}"
        f"{'; published as latest' if args.publish else ''}); resumes under any DP x TP x PP x ZeRO layout"
    )
    return 0


# ------------------------------------------------------------------------------------- info, verify


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="a checkpoint folder (step_XXXXXXXX) or a run folder (its latest)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _summary(ckpt, meta: dict, reader) -> dict:
    import statistics

    from framework.checkpoint import store

    sharded_format = _is_sharded(ckpt)
    files = sorted((ckpt / "shards").glob("*.safetensors")) if sharded_format else reader.files()
    sizes = [f.stat().st_size for f in files]
    kinds: dict[str, dict] = {}
    for name, kind in reader.keys():
        entry = kinds.setdefault(kind, {"tensors": 0, "dtypes": set()})
        entry["tensors"] += 1
        entry["dtypes"].add(str(reader.dtype(name, kind)).removeprefix("torch."))
    names = _weight_names(reader)
    has_moments = [n for n in names if all(reader.has(n, k) for k in MOMENTS)]
    problems = reader.check_complete() + reader.check_files()
    par = meta.get("config", {}).get("parallel", {})
    return {
        "checkpoint": str(ckpt),
        "step": meta.get("step"),
        "consumed_samples": meta.get("consumed_samples"),
        "tokens": meta.get("tokens"),
        "format": _format(ckpt, meta, sharded_format),
        "sharded": sharded_format,
        "layout": None
        if meta.get("world_size") is None
        else {
            "world_size": meta.get("world_size"),
            "dp": meta.get("dp_size"),
            "tensor": par.get("tensor", 1),
            "pipeline": par.get("pipeline", 1),
            "zero_stage": meta.get("zero_stage"),
        },
        "precision": meta.get("precision"),
        "files": len(files),
        "bytes_total": sum(sizes),
        "bytes_per_file": {"min": min(sizes), "median": int(statistics.median(sizes)), "max": max(sizes)}
        if sizes
        else None,
        "parameters": len(names),
        "elements": sum(_numel(reader.shape(n, _kind_of(reader, n))) for n in names),
        "kinds": {k: {"tensors": v["tensors"], "dtypes": sorted(v["dtypes"])} for k, v in sorted(kinds.items())},
        "complete": not problems,
        "problems": problems,
        "optimizer_state": bool(names) and len(has_moments) == len(names),
        "resumable": not problems and bool(names) and all(reader.has(n, "fp32") for n in names),
        "adam_step": store.saved_adam_step(ckpt, meta),
        **{k: meta[k] for k in ("imported_from", "converted_from", "consolidated_from", "weights_only") if k in meta},
    }


def _format(ckpt, meta: dict, sharded_format: bool) -> str:
    if sharded_format:
        return f"sharded ({meta.get('tensors', 'anvil-sharded/1')})"
    if meta.get("tensors") == "consolidated":
        return "consolidated weights (model.safetensors, from anvil checkpoint consolidate)"
    files = [f for f in ("model.safetensors", "optimizer.safetensors", "ds/") if (ckpt / f.rstrip("/")).exists()]
    return f"earlier version ({' + '.join(files)})"


def _numel(shape) -> int:
    import math

    return math.prod(shape)


def _kind_of(reader, name: str) -> str:
    return next(k for k in WEIGHT_KINDS if reader.has(name, k))


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _info(args: argparse.Namespace) -> int:
    import json

    ckpt, meta, reader = _open(args.checkpoint, "info")
    with reader:
        s = _summary(ckpt, meta, reader)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"{s['checkpoint']}: step {s['step']}, {s['consumed_samples']} samples / {s['tokens']} tokens consumed")
    lay = s["layout"]
    saved = (
        f"world {lay['world_size']} = DP {lay['dp']} x TP {lay['tensor']} x PP {lay['pipeline']}, "
        f"ZeRO-{lay['zero_stage']}"
        if lay
        else "none (written by one process; layout-free)"
    )
    print(f"saved layout: {saved}; precision {s['precision'] or 'n/a'}")
    per = s["bytes_per_file"]
    print(
        f"format: {s['format']}; {s['files']} {'shard ' if s['sharded'] else ''}file(s), {_mb(s['bytes_total'])}"
        + (f" (per file min {_mb(per['min'])}, median {_mb(per['median'])}, max {_mb(per['max'])})" if per else "")
    )
    kinds = ", ".join(f"{k} {v['tensors']} ({'/'.join(v['dtypes'])})" for k, v in s["kinds"].items())
    print(f"tensors: {s['parameters']} parameters ({s['elements']:,} values); kinds: {kinds}")
    print(f"complete: {'yes' if s['complete'] else 'NO: ' + _first(s['problems'])}")
    print(
        "optimizer state: "
        + (
            f"yes (Adam moments, step {s['adam_step']})"
            if s["optimizer_state"]
            else "no (resuming restarts the Adam moments from zero)"
        )
    )
    print(
        "resumes training: "
        + (
            "yes, under any DP x TP x PP x ZeRO layout"
            if s["resumable"]
            else "no (incomplete)"
            if not s["complete"]
            else "no (no fp32 master weights; `anvil checkpoint convert --weights-only` makes a "
            "copy that does); export, eval and generate read it"
        )
    )
    for key in ("imported_from", "converted_from", "consolidated_from"):
        if key in s:
            print(f"{key.replace('_', ' ')}: {s[key]}")
    return 0


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="a checkpoint folder (step_XXXXXXXX) or a run folder (its latest)"
    )


def _verify(args: argparse.Namespace) -> int:
    from framework.checkpoint import store
    from framework.interop.hf_export import ExportError, expected_shapes, model_config_from_meta

    ckpt, meta, reader = _open(args.checkpoint, "verify")
    files = (meta.get("integrity") or {}).get("files") or {}
    problems = store.verify(ckpt)  # sizes and checksums of every recorded file
    with reader:
        problems += reader.check_files() + reader.check_complete()
        try:
            shapes = expected_shapes(model_config_from_meta(meta))
        except ExportError as exc:
            problems.append(str(exc))
            shapes = {}
        names = set(_weight_names(reader))
        for name, shape in shapes.items():
            if name not in names:
                problems.append(f"weight {name}: missing from the checkpoint")
            elif tuple(reader.shape(name, _kind_of(reader, name))) != shape:
                problems.append(
                    f"weight {name}: shape {tuple(reader.shape(name, _kind_of(reader, name)))}, "
                    f"the model in anvil.json has {shape}"
                )
        problems += [
            f"weight {n}: not a parameter of the model in anvil.json"
            for n in sorted(names - set(shapes))
            if shapes and not (n == "head.weight")
        ]
        if _is_sharded(ckpt):  # resuming needs the fp32 master of every weight
            problems += [
                f"fp32 of {n}: missing (the master weight training resumes from)"
                for n in sorted(names)
                if not reader.has(n, "fp32")
            ]
        with_moments = [n for n in sorted(names) if any(reader.has(n, k) for k in MOMENTS)]
        if with_moments:
            problems += [
                f"{k} of {n}: missing (other parameters have Adam moments)"
                for n in sorted(names)
                for k in MOMENTS
                if not reader.has(n, k)
            ]
    if problems:
        raise _fail("verify", f"{ckpt}: {_first(problems)}")
    algos = sorted({a for rec in files.values() for a in rec if a != "size"})
    print(
        f"ok: {ckpt} (step {meta.get('step')}, {len(names)} parameters"
        f"{', with Adam state' if with_moments else ', weights only'}; "
        + (
            f"{len(files)} files match their {'/'.join(algos)} checksums)"
            if files
            else "no checksums recorded: written before they were)"
        )
    )
    return 0


COMMANDS = [
    Command(
        ("checkpoint", "consolidate"),
        "write a checkpoint's weights as one layout-free model.safetensors",
        _consolidate_args,
        _consolidate,
        CONSOLIDATE_HELP,
    ),
    Command(
        ("checkpoint", "convert"),
        "copy a checkpoint as one shard of full tensors (optionally weights only)",
        _convert_args,
        _convert,
        CONVERT_HELP,
    ),
    Command(
        ("checkpoint", "info"),
        "show a checkpoint's step, layout, format, files, tensors and completeness",
        _info_args,
        _info,
        INFO_HELP,
    ),
    Command(
        ("checkpoint", "verify"),
        "exit 0 if a checkpoint is complete and intact, else name the first problem",
        _verify_args,
        _verify,
        VERIFY_HELP,
    ),
]
