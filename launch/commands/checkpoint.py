"""`anvil checkpoint convert` / `anvil checkpoint info`: layout-free checkpoints, offline.

Every Anvil checkpoint carries its full weights (`model.safetensors`) and full Adam state
(`optimizer.safetensors`) next to DeepSpeed's layout-specific engine files (`ds/`, `rng/`).
`convert` writes a checkpoint with only the layout-free part (a fraction of the size of a ZeRO
checkpoint with many ranks, and nothing tied to DP x TP x PP x ZeRO); training resumes from it under
any layout (`run_dir=...` pointing at a folder whose `checkpoints/latest` names it, or `--output`
inside a run's `checkpoints/` folder with `--publish`).
"""
from __future__ import annotations

import argparse

from launch.cli import Command


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder (step_XXXXXXXX) or a run folder (its latest)")
    p.add_argument("--output", required=True, help="folder for the layout-free checkpoint")
    p.add_argument("--weights-only", action="store_true",
                   help="allow a source without optimizer.safetensors: Adam moments restart from zero")
    p.add_argument("--publish", action="store_true",
                   help="also point the output's parent folder's `latest` at it (resume from it by rerunning)")


def _convert(args: argparse.Namespace) -> int:
    import json
    import os
    import shutil
    from pathlib import Path

    from framework.checkpoint import store, universal

    try:
        src = store.resolve(args.checkpoint)
        meta = store.read_meta(src)
    except (store.CheckpointError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"anvil checkpoint convert: {exc}") from None
    if not (src / "model.safetensors").is_file():
        raise SystemExit(f"anvil checkpoint convert: {src}/model.safetensors: missing")
    has_opt = (src / universal.OPTIMIZER_FILE).is_file()
    if not has_opt and not args.weights_only:
        raise SystemExit(f"anvil checkpoint convert: {src}/{universal.OPTIMIZER_FILE}: missing (checkpoint "
                         "written before universal checkpoints); pass --weights-only to restart Adam moments")
    out = Path(args.output)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"anvil checkpoint convert: {out}: exists and is not empty")
    tmp = out.with_name(out.name + ".tmp-convert")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("model.safetensors", universal.OPTIMIZER_FILE, "config.yaml"):
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    if not has_opt:
        universal.optimizer_from_weights(src / "model.safetensors", tmp / universal.OPTIMIZER_FILE)
    meta["converted_from"] = str(src)
    meta.pop("format", None)
    (tmp / "anvil.json").write_text(json.dumps({"format": store.FORMAT, **meta}, indent=2, sort_keys=True))
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    if args.publish:
        (out.parent / store.LATEST).write_text(out.name + "\n")
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote layout-free checkpoint {out} (step {meta.get('step')}, {size:.1f} MB"
          f"{'' if has_opt else ', weights only'}); resumes under any DP x TP x PP x ZeRO layout")
    return 0


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder or a run folder (its latest)")


def _info(args: argparse.Namespace) -> int:
    from safetensors import safe_open

    from framework.checkpoint import store, universal

    try:
        ckpt = store.resolve(args.checkpoint)
        meta = store.read_meta(ckpt)
    except (store.CheckpointError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"anvil checkpoint info: {exc}") from None
    par = meta.get("config", {}).get("parallel", {})
    print(f"{ckpt}: step {meta.get('step')}, {meta.get('consumed_samples')} samples consumed")
    print(f"saved layout: DP {meta.get('dp_size')} x TP {par.get('tensor', 1)} x PP {par.get('pipeline', 1)}, "
          f"ZeRO-{meta.get('zero_stage')}, {meta.get('precision', '?')}; engine files: "
          f"{'yes' if (ckpt / 'ds').is_dir() else 'no (layout-free)'}")
    opt = ckpt / universal.OPTIMIZER_FILE
    if opt.is_file():
        with safe_open(str(opt), framework="pt") as f:
            m = f.metadata() or {}
            print(f"optimizer state: {len(list(f.keys()))} tensors, Adam step {m.get('adam_step')}: resumes under any layout")
    else:
        print("optimizer state: no optimizer.safetensors (resumes only under the saved layout)")
    return 0


COMMANDS = [
    Command(("checkpoint", "convert"), "write a layout-free copy of a checkpoint (weights + Adam state, no engine files)",
            _convert_args, _convert),
    Command(("checkpoint", "info"), "show a checkpoint's step, saved layout and whether it resumes under any layout",
            _info_args, _info),
]
