"""`anvil model info CONFIG`: parameter counts and training FLOPs per token of a model config."""

from __future__ import annotations

import argparse

from launch.cli import Command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config", help="a model preset (configs/models/1.3b.yaml), a training config, or a preset name (1.3b)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. model.n_layers=8")
    p.add_argument(
        "--instantiate", action="store_true", help="also build the model on the meta device and count its parameters"
    )


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from framework.config import load_run_config
    from framework.model.presets import PRESET_DIR, count_params, human, list_presets

    path = args.config
    if not Path(path).is_file() and (PRESET_DIR / f"{path}.yaml").is_file():
        path = str(PRESET_DIR / f"{path}.yaml")
    elif not Path(path).is_file():
        raise SystemExit(f"anvil model info: {path}: no such file or preset (presets: {', '.join(list_presets())})")
    cfg = load_run_config(path, args.overrides)
    m = cfg.model
    size = count_params(m)
    rows = [
        (
            "architecture",
            f"{m.arch}: {m.n_layers} layers, d_model {m.d_model}, {m.n_heads} heads"
            + (f" ({m.n_kv_heads} kv)" if m.n_kv_heads else ""),
        ),
        ("vocab / seq_len", f"{m.vocab_size} / {m.seq_len}"),
        ("parameters", f"{size.total:,} ({human(size.total)})"),
        ("non-embedding", f"{size.non_embedding:,} ({human(size.non_embedding)})"),
        ("embedding + head", f"{size.embedding:,} + {size.head:,}"),
        ("train FLOPs/token", f"{size.flops_per_token:.4g}"),
        ("fp32 weights", f"{size.total * 4 / 2**30:.2f} GiB"),
        ("mixed-precision model states", f"{size.total * 16 / 2**30:.2f} GiB (2+2+12 bytes/param, ZeRO-0)"),
    ]
    if args.instantiate:
        import torch

        from framework.model.transformer import Transformer

        with torch.device("meta"):
            model = Transformer(m)
        rows.append(("instantiated (meta)", f"{model.num_params():,}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


COMMANDS = [
    Command(("model", "info"), "print parameter counts and FLOPs per token of a model config", _configure, _run)
]
