"""The training loop: data -> engine step -> metrics -> validation -> checkpoint, resumable at any step.

`train(cfg)` is what `anvil train` calls, in one process or on every rank under torchrun. The loop
state is three numbers (step, consumed samples, tokens) plus the stability monitor; they, the
engine and every RNG go into each checkpoint, and rerunning the same command continues from the
latest one with exactly the batches, learning rates and losses an uninterrupted run would have.
The checkpoint resumed from is verified first (`store.select_checkpoint`): a corrupt or truncated
latest checkpoint is reported and the previous one used. With `train.spike_action: rollback` a
loss spike rolls back to the last good checkpoint and skips the data since (`rollback`).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from framework.checkpoint import store
from framework.config import RunConfig
from framework.configtree import ConfigError, dump_yaml, to_dict
from framework.runtime import get_logger, print_table, seed_everything
from framework.training.stability import TrainingDiverged

log = get_logger("anvil.train")


def _all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    values = values.clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def build_model(cfg: RunConfig, device: torch.device | str = "cpu") -> torch.nn.Module:
    """This rank's part of the model: built on the meta device, parallelised, then only this rank's
    shards materialised (ZeRO-3: partitioned unit by unit). Same seed, same weights at any layout."""
    import torch.distributed as dist

    from framework.parallel import topology
    from framework.parallel.parallelize import build_meta_model, parallelize
    from framework.training.engine import deepspeed_config

    topo = topology.current()
    if topo is not None:
        dp = topo.layout.data
    else:
        dp = dist.get_world_size() if dist.is_initialized() else 1
    ds_config = deepspeed_config(cfg, dp) if cfg.parallel.zero_stage == 3 else None
    return parallelize(build_meta_model(cfg), topo, cfg, torch.device(device), ds_config)


def _check_resume_compatible(meta: dict, cfg: RunConfig, ckpt: Path) -> None:
    saved = meta.get("config", {})
    if saved.get("model") != to_dict(cfg.model):
        diff = [k for k, v in to_dict(cfg.model).items() if saved.get("model", {}).get(k) != v]
        raise ConfigError(
            f"{ckpt}: the checkpoint's model differs from the config in model.{', model.'.join(diff)}; "
            f"use another run_dir to start a new run"
        )
    saved_gbs = saved.get("train", {}).get("global_batch_size")
    if saved_gbs != cfg.train.global_batch_size:
        raise ConfigError(
            f"{ckpt}: train.global_batch_size changed ({saved_gbs} -> {cfg.train.global_batch_size}); "
            "the data position would not line up; use another run_dir to start a new run"
        )
    # A different DP x TP x PP x ZeRO layout resumes through framework.checkpoint.universal.


def train(cfg: RunConfig) -> dict:
    from framework.distributed import init_distributed
    from framework.training.watchdog import start_watchdog
    from framework.training.data import TrainingData
    from framework.training.engine import Engine
    from framework.training.memory import HostMemory
    from framework.training.metrics import MetricsLogger, peak_memory_gb, peak_tflops
    from framework.training.schedules import lr_at
    from framework.training.rollback import RollbackGuard
    from framework.training.stability import StabilityMonitor
    from framework.model.presets import count_params

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dp = cfg.check_layout(world)  # before any process group or file is touched
    rank, world, device = init_distributed(cfg.parallel.timeout_s)
    seed_everything(cfg.seed)  # initial weights have their own seeds (framework.model.init); this is the rest
    watchdog = start_watchdog(cfg.parallel.timeout_s)  # heartbeat: a dead or hung rank stops the job, named
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # ranks on one host share its cores; oversubscribed intra-op threads spin instead of working
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    topo = None
    if cfg.parallel.tensor * cfg.parallel.pipeline > 1:  # megatron-core groups, checked against DeepSpeed's
        from framework.parallel import topology

        topo = topology.initialize(topology.validate_layout(cfg, world), cfg.parallel.sequence_parallel)
    dp_rank = topo.dp_rank if topo is not None else rank
    t = cfg.train
    run_dir = Path(cfg.run_dir)
    ckpt_root = run_dir / "checkpoints"
    config_yaml = dump_yaml(cfg)
    if rank == 0:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config_yaml)

    ckpt = store.select_checkpoint(ckpt_root)  # verified; falls back past a corrupt latest, with a warning
    meta = store.read_meta(ckpt) if ckpt is not None else None
    if meta is not None:
        _check_resume_compatible(meta, cfg, ckpt)

    data = TrainingData(cfg, dp_rank, dp)
    from framework.training.downstream import InLoopEval, check_supported

    resolved_tasks = check_supported(cfg, data.tokenizer_path)  # eval.tasks / eval.datasets: before any step
    mem = HostMemory()  # per-phase peak host RSS of this rank, written to RUN_DIR/memory.jsonl at the end
    mem.record("baseline")
    with mem.phase("startup"):
        engine = Engine(cfg, build_model(cfg, device), dp, device)
    downstream = InLoopEval(cfg, engine.module, data.tokenizer_path, device, dp_rank, dp, resolved_tasks)
    stability = StabilityMonitor(
        t.max_consecutive_skips, t.spike_window, t.spike_zscore, stop_on_skips=t.spike_action == "log"
    )
    guard = RollbackGuard(t.spike_action, t.max_rollbacks, t.inject_nan_at, run_dir, rank)
    step, consumed, tokens = 0, 0, 0
    save_stats: dict = {}
    load_s = None
    if ckpt is not None:
        load_start = time.perf_counter()
        with mem.phase("load"):
            meta = store.load(ckpt, engine)
        load_s = time.perf_counter() - load_start
        step, consumed, tokens = meta["step"], meta["consumed_samples"], meta["tokens"]
        stability.load_state_dict(meta.get("stability", {}))
        log.info("resumed from %s (step %d, %d samples consumed)", ckpt, step, consumed)
    guard.start(meta)

    size = count_params(cfg.model)
    peak = peak_tflops(cfg.logging.peak_tflops)
    metrics = MetricsLogger(
        str(run_dir),
        to_dict(cfg),
        enabled=rank == 0,
        console=cfg.logging.console,
        wandb=cfg.logging.wandb,
        wandb_project=cfg.logging.wandb_project,
        wandb_group=cfg.logging.wandb_group,
        tensorboard=cfg.logging.tensorboard,
        resume_step=step if ckpt is not None else None,
    )
    if rank == 0:
        log.info(
            "training %s parameters (%s non-embedding) for %d steps: world %d, DP %d, ZeRO-%d, %s, "
            "%d micro-batches of %d per rank per step",
            f"{size.total:,}",
            f"{size.non_embedding:,}",
            t.steps,
            world,
            dp,
            cfg.parallel.zero_stage,
            t.precision,
            engine.gas,
            t.micro_batch_size,
        )
    valid = data.valid_micro_batches()
    tokens_per_step = t.global_batch_size * cfg.model.seq_len
    last_loss = last_val = float("nan")
    start = time.perf_counter()
    window_start, window_tokens, trained_steps = time.perf_counter(), 0, 0

    def save() -> None:
        state = {
            "step": step,
            "consumed_samples": consumed,
            "tokens": tokens,
            "dp_size": dp,
            "world_size": world,
            "zero_stage": cfg.parallel.zero_stage,
            "precision": t.precision,
            "tokenizer": os.path.abspath(data.tokenizer_path) if data.tokenizer_path else None,
            "stability": stability.state_dict(),
            **guard.state_dict(),
            "config": to_dict(cfg),
        }
        with mem.phase("save"):
            store.save(
                ckpt_root,
                step,
                engine,
                state,
                t.keep_checkpoints,
                config_yaml,
                after_write=_fault_hook(),
                stats=save_stats,
            )
        guard.saved(step, consumed)

    def rollback(why: str) -> None:
        """Reload the newest intact checkpoint in-process; the data position stays where it is."""
        nonlocal step, tokens
        guard.check_budget(step, why)
        target = store.select_checkpoint(ckpt_root)
        if target is None:
            raise TrainingDiverged(f"step {step}: {why}, and there is no checkpoint to roll back to")
        with mem.phase("load"):
            saved = store.load(target, engine)
        rec = guard.record(step, consumed, saved)
        metrics.log(rec)
        if rank == 0:
            log.warning(
                "step %d: %s; rolled back to step %d (%s), skipping samples %d-%d (rollback %d of at most %d)",
                step,
                why,
                saved["step"],
                target,
                *rec["skipped_samples"],
                len(guard.applied),
                t.max_rollbacks,
            )
        step, tokens = saved["step"], saved["tokens"]
        stability.restore_window(saved.get("stability", {}))

    def evaluate() -> float:
        if not valid:
            return float("nan")
        total = engine.eval_loss(valid) / len(valid)
        return float(_all_reduce_mean(total.reshape(1))[0])

    try:
        if ckpt is None and guard.enabled:
            save()  # step 0: a spike before the first interval checkpoint has something to roll back to
        while step < t.steps:
            lr = lr_at(step, t)
            with mem.phase("steps"):
                result = engine.train_step(data.train_micro_batches(consumed), lr, inject_nan=guard.fire(step + 1))
            step += 1
            trained_steps += 1
            watchdog.beat(step)
            consumed += t.global_batch_size
            tokens += tokens_per_step
            window_tokens += tokens_per_step
            loss = float(_all_reduce_mean(result.loss.reshape(1))[0])
            flags = stability.observe(step, loss, result.applied)
            last_loss = loss if math.isfinite(loss) else last_loss
            why = guard.reason(step, consumed, flags, stability.consecutive_skips, t.max_consecutive_skips)
            if step % t.log_interval == 0 or step == t.steps or not result.applied or flags.get("spike") or why:
                elapsed = time.perf_counter() - window_start
                tps = window_tokens / elapsed if elapsed > 0 else 0.0
                flops = size.flops_per_token * tps / world
                record = {
                    "step": step,
                    "loss": loss,
                    "lr": lr,
                    "tokens": tokens,
                    "tokens_per_s": tps,
                    "grad_norm": result.grad_norm,
                    "tflops": flops / 1e12,
                    "mfu": flops / (peak * 1e12) if peak else None,
                    "mem_gb": peak_memory_gb(),
                    **flags,
                }
                if not result.applied:
                    record["skipped"] = True
                    log.warning(
                        "step %d: non-finite loss or gradient norm; update skipped (%d skipped so far)",
                        step,
                        stability.skipped_total,
                    )
                metrics.log(record)
                window_start, window_tokens = time.perf_counter(), 0
            if why:
                rollback(why)
                window_start, window_tokens = time.perf_counter(), 0
                continue
            if (t.eval_interval and step % t.eval_interval == 0) or step == t.steps:
                last_val = evaluate()
                if math.isfinite(last_val):
                    metrics.log({"step": step, "val_loss": last_val, "tokens": tokens})
            if downstream.due(step, t.steps):
                record = downstream.run(step)
                metrics.log(record)
                window_start += record["eval/seconds"]  # evaluation time is not training throughput
            if step % t.checkpoint_interval == 0 or step == t.steps:
                save()
    finally:
        metrics.close()
    _write_memory_report(run_dir, mem, step, save_stats, load_s, rank)
    watchdog.stop()
    wall = time.perf_counter() - start
    summary = {
        "steps": step,
        "loss": last_loss,
        "val_loss": last_val,
        "tokens": tokens,
        "skipped": stability.skipped_total,
        "spikes": stability.spikes,
        **guard.summary(),
        **({"eval_s": downstream.seconds} if cfg.eval.enabled else {}),
        "wall_s": wall,
        "tokens_per_s": trained_steps * tokens_per_step / wall if wall > 0 else 0.0,
    }
    print_table([summary], title=f"anvil train: {run_dir}")
    if rank == 0:
        for rec in guard.applied:
            print(
                f"  rollback at step {rec['step']} to step {rec['rollback_to']}: skipped samples "
                f"{rec['skipped_samples'][0]}-{rec['skipped_samples'][1]}",
                flush=True,
            )
    return {**summary, "rollback_log": list(guard.applied)}


def _write_memory_report(run_dir: Path, mem, step: int, save_stats: dict, load_s, rank: int) -> None:
    """Append one line per run to RUN_DIR/memory.jsonl: every rank's peak host RSS per phase (GB),
    checkpoint seconds (slowest rank) and bytes each rank wrote. Collective (a few floats)."""
    import json

    from framework.training.memory import gather

    phases = ["baseline", "startup", "load", "steps", "save"]
    peaks = gather(mem, phases)
    extra = torch.tensor(
        [
            save_stats.get("seconds", float("nan")),
            float(save_stats.get("bytes", 0)),
            float("nan") if load_s is None else load_s,
        ],
        dtype=torch.float64,
    )
    rows = _all_gather_rows(extra)
    if rank != 0:
        return
    finite = lambda xs: [x for x in xs if math.isfinite(x)]  # noqa: E731
    record = {
        "step": step,
        "host_memory_gb": {k: v for k, v in peaks.items() if any(x is not None for x in v)},
        "checkpoint_save_s": max(finite([r[0] for r in rows]), default=None),
        "checkpoint_bytes": [int(r[1]) for r in rows],
        "checkpoint_load_s": max(finite([r[2] for r in rows]), default=None),
    }
    with open(run_dir / "memory.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _all_gather_rows(values: torch.Tensor) -> list[list[float]]:
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [values.tolist()]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    parts = [torch.empty_like(values, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, values.to(device))
    return [p.cpu().tolist() for p in parts]


def _fault_hook():
    """`ANVIL_FAULT_KILL_IN_CHECKPOINT=1` kills rank 0 after a checkpoint is written but before it
    is published (crash-consistency tests; never set in normal runs)."""
    if os.environ.get("ANVIL_FAULT_KILL_IN_CHECKPOINT") != "1":
        return None

    def kill(tmp: Path) -> None:
        import signal

        if int(os.environ.get("RANK", "0")) == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    return kill
