"""`anvil train CONFIG.yaml [key=value ...]`: train (or resume) a model; one process or under torchrun."""

from __future__ import annotations

import argparse

from launch.cli import Command
from launch.config_help import add_help_config, run_config_rows

EPILOG = """examples:
  anvil train configs/train/tiny.yaml
  anvil train configs/train/tiny.yaml train.steps=500 run_dir=runs/tiny2 parallel.zero_stage=2
  torchrun --nproc_per_node 2 $(which anvil) train configs/train/tiny.yaml
Rerunning the same command resumes from RUN_DIR/checkpoints/latest."""


def _configure(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("config", help="training config YAML (e.g. configs/train/tiny.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=3e-4")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_help_config(p, run_config_rows, "training config")


def _run(args: argparse.Namespace) -> int:
    import os

    from framework.config import dump_yaml, load_run_config

    cfg = load_run_config(args.config, args.overrides)
    cfg.check_layout(int(os.environ.get("WORLD_SIZE", "1")))
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    import warnings

    from framework.runtime import setup_logging

    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    from framework.checkpoint.store import CheckpointError
    from framework.training.stability import TrainingDiverged
    from framework.training.trainer import train

    setup_logging()
    use_builtin_data(cfg)
    try:
        train(cfg)
    except (TrainingDiverged, CheckpointError) as exc:
        raise SystemExit(f"anvil train: {exc}") from None
    finally:
        _shutdown()
    return 0


def use_builtin_data(cfg) -> None:
    """No `data.paths`: train on the built-in sample corpus (tokenized once per cache folder, under a
    lock, so ranks started together wait for the first). Resolved here, in the launch layer, so the
    framework never imports curation code; RUN_DIR/config.yaml then names the prefix it used."""
    if cfg.data.paths:
        return
    from data_pipeline.tokens.builtin import builtin_data
    from framework.training.data import data_cache_dir

    prefix, tokenizer = builtin_data(data_cache_dir(cfg), cfg.model.vocab_size)
    cfg.data.paths, cfg.data.tokenizer = [prefix], cfg.data.tokenizer or tokenizer


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from framework.parallel import topology

        dist.barrier()
        topology.destroy()  # megatron-core's parallel state and DeepSpeed's remembered mpu
        from deepspeed import comm

        # DeepSpeed's own teardown also drops the groups it caches process-wide, so a second
        # training in the same process (a test, a notebook) does not reuse destroyed groups.
        if comm.is_initialized():
            comm.destroy_process_group()
        else:
            dist.destroy_process_group()


COMMANDS = [
    Command(("train",), "train a language model (resumes automatically from RUN_DIR/checkpoints)", _configure, _run)
]
