"""Trainer benchmarks on CPU: Anvil's step time against a bare PyTorch loop, and ZeRO model-state
bytes per rank against the ZeRO paper's formulas.

    python benchmarks/trainer.py [--steps 20] [--skip-zero] [--skip-overhead]

1. Overhead: the same model, micro-batches, AdamW (same param groups), gradient accumulation and
   clipping, one process; Anvil = `Engine.train_step` (DeepSpeed ZeRO-0, skip guard, LR setting),
   bare = forward / backward / clip / step / zero_grad. Blocks of steps alternate between the two
   so background load hits both alike; the table reports medians. Target: overhead <= 5%.
2. ZeRO: at DP=2 and 4 for stages 0-3 (fp32 and bf16), bytes held per rank at the moment the
   (second) optimizer step starts: parameters (local shard), gradients, optimizer state (Adam moments plus fp32
   master copies), measured from the live tensors, against the paper's (2+2+12) Psi mixed precision
   and (4+4+8) Psi fp32 split by stage: 0: all replicated; 1: optimizer / N; 2: + gradients / N;
   3: + parameters / N.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# benchmarks/ holds scripts named like stdlib modules (tokenize.py): import from the repo root only
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from framework.config import RunConfig  # noqa: E402
from framework.runtime import print_table  # noqa: E402


def bench_config(stage: int = 0, precision: str = "fp32") -> RunConfig:
    cfg = RunConfig()
    cfg.model.n_layers, cfg.model.d_model, cfg.model.n_heads = 4, 256, 4
    cfg.model.vocab_size, cfg.model.seq_len = 512, 128
    cfg.train.micro_batch_size, cfg.train.global_batch_size = 4, 8
    cfg.parallel.zero_stage, cfg.train.precision = stage, precision
    return cfg


def overhead(steps: int, blocks: int) -> list[dict]:
    from framework.distributed import init_distributed
    from framework.training.engine import Engine, param_groups
    from framework.training.trainer import build_model

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    cfg = bench_config()
    _, _, device = init_distributed()
    g = torch.Generator().manual_seed(0)
    V, T, B = cfg.model.vocab_size, cfg.model.seq_len, cfg.train.micro_batch_size
    batches = [(torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)) for _ in range(2)]
    engine = Engine(cfg, build_model(cfg), 1, device)
    bare = build_model(cfg)
    t = cfg.train
    opt = torch.optim.AdamW(param_groups(bare, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.adam_eps)

    def anvil_step():
        engine.train_step(batches, t.lr)

    def bare_step():
        for x, y in batches:
            (bare(x, y) / len(batches)).backward()
        torch.nn.utils.clip_grad_norm_(bare.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = {"anvil": [], "bare": []}
    for fn in (anvil_step, bare_step):  # warm-up
        for _ in range(3):
            fn()
    for _ in range(blocks):
        for name, fn in (("anvil", anvil_step), ("bare", bare_step)):
            for _ in range(steps):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    a, b = statistics.median(times["anvil"]), statistics.median(times["bare"])
    return [
        {"loop": "bare PyTorch", "median step s": b, "min step s": min(times["bare"]), "overhead %": 0.0},
        {
            "loop": "Anvil (DeepSpeed ZeRO-0)",
            "median step s": a,
            "min step s": min(times["anvil"]),
            "overhead %": 100 * (a / b - 1),
        },
    ]


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for x in tensors:
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        total += x.numel() * x.element_size()
    return total


def _zero_worker(precision: str) -> list[dict]:
    """On each rank: for stages 0-3, one step; measure model-state bytes when the optimizer steps."""
    import torch.distributed as dist

    from framework.distributed import init_distributed
    from framework.training.engine import Engine
    from framework.training.trainer import build_model

    rank, world, device = init_distributed()
    rows = []
    for stage in range(4):
        cfg = bench_config(stage, precision)
        cfg.train.global_batch_size = cfg.train.micro_batch_size * world
        engine = Engine(cfg, build_model(cfg), world, device)
        module = engine.module
        inner = engine.ds.basic_optimizer
        seen: dict = {}
        original = inner.step

        def measured_step(*args, **kwargs):
            module_params = list(module.parameters())
            local = [getattr(p, "ds_tensor", p) for p in module_params]
            ids = {id(p) for p in module_params}
            masters = [p for g in inner.param_groups for p in g["params"] if id(p) not in ids]
            grads = [p.grad for p in module_params] + [p.grad for p in masters]
            z3 = getattr(engine.ds.optimizer, "fp32_partitioned_groups_flat", None)
            if z3 is not None:  # ZeRO-3 hands the optimizer its fp32 partitions (with their grads)
                masters = [p for p in z3 if id(p) not in ids]
                grads = [p.grad for p in module_params] + [p.grad for p in masters]
            state = [v for s in inner.state.values() for v in s.values() if torch.is_tensor(v) and v.numel() > 1]
            seen.update(
                params=_tensor_bytes(local),
                grads=_tensor_bytes(grads),
                optim=_tensor_bytes(state) + _tensor_bytes(masters),
            )
            return original(*args, **kwargs)

        inner.step = measured_step
        x = torch.randint(0, cfg.model.vocab_size, (cfg.train.micro_batch_size, cfg.model.seq_len))
        for _ in range(2):  # Adam allocates its moments at the first step: measure at the second
            engine.train_step([(x, x)], 1e-3)
        n = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in module.parameters())
        rows.append({"stage": stage, "psi": n, **seen})
        dist.barrier()
    return rows


def expected(stage: int, psi: int, n: int, precision: str) -> dict:
    p, g, k = (2, 2, 12) if precision == "bf16" else (4, 4, 8)
    return {
        "params": p * psi / (n if stage >= 3 else 1),
        "grads": g * psi / (n if stage >= 2 else 1),
        "optim": k * psi / (n if stage >= 1 else 1),
    }


def zero_table() -> list[dict]:
    from tests.helpers.dist import run_distributed

    rows = []
    for precision in ("fp32", "bf16"):
        for world in (2, 4):
            for r in run_distributed(_zero_worker, world, precision, timeout=600)[0]:
                exp = expected(r["stage"], r["psi"], world, precision)
                measured_total = r["params"] + r["grads"] + r["optim"]
                rows.append(
                    {
                        "precision": precision,
                        "DP": world,
                        "ZeRO": r["stage"],
                        "params MB": f"{r['params'] / 1e6:.2f} / {exp['params'] / 1e6:.2f}",
                        "grads MB": f"{r['grads'] / 1e6:.2f} / {exp['grads'] / 1e6:.2f}",
                        "optim MB": f"{r['optim'] / 1e6:.2f} / {exp['optim'] / 1e6:.2f}",
                        "total measured/expected": measured_total / sum(exp.values()),
                    }
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="steps per block (default 10)")
    ap.add_argument("--blocks", type=int, default=4, help="alternating blocks per loop (default 4)")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-zero", action="store_true")
    args = ap.parse_args()
    if not args.skip_zero:
        print_table(zero_table(), title="ZeRO model-state bytes per rank, measured / paper formula")
    if not args.skip_overhead:
        print_table(overhead(args.steps, args.blocks), title="Step time, 1 process, same model/batch/optimizer")


if __name__ == "__main__":
    main()
