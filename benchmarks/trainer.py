"""Trainer benchmarks on CPU: Anvil's step time against a bare PyTorch loop, and (opt-in) ZeRO
model-state bytes per rank measured from live tensors against the ZeRO paper's formulas.

    python benchmarks/trainer.py [--pairs 40] [--zero [--zero-dp 2 4]] [--skip-overhead]

1. Overhead (default): the same model, micro-batches, AdamW (same param groups), gradient
   accumulation and clipping, one process, one thread; Anvil = `Engine.train_step` (DeepSpeed
   ZeRO-0, skip guard, LR setting), bare = forward / backward / clip / step / zero_grad. Steps of
   the two loops are interleaved (A B B A ...) so background load hits both alike; the row reports
   wall seconds per step, medians. Target (issue 17): overhead <= 5%.
2. ZeRO (--zero; several CPU-minutes, so not in `make bench`): at DP=2 and 4 for stages 0-3 (fp32
   and bf16), bytes per rank when the optimizer steps (second step): parameters (local shard),
   gradients, optimizer state (Adam moments plus fp32 master copies), MEASURED from the live
   tensors reachable from the module and the optimizer (DeepSpeed's flat communication buffers are
   not counted), against the paper's (2+2+12) Psi mixed precision and (4+4+8) Psi fp32 split by
   stage: 0: all replicated; 1: optimizer / N; 2: + gradients / N; 3: + parameters / N.
   Gradients are the most alive at one optimizer call: ZeRO 1/2 step one parameter group at a
   time and free each group's fp32 gradient partition after it.
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

from benchmarks.common import Recorder, row  # noqa: E402
from framework.config import RunConfig  # noqa: E402
from framework.runtime import print_table  # noqa: E402


def bench_config(stage: int = 0, precision: str = "fp32") -> RunConfig:
    cfg = RunConfig()
    cfg.model.n_layers, cfg.model.d_model, cfg.model.n_heads = 4, 256, 4
    cfg.model.vocab_size, cfg.model.seq_len = 512, 128
    cfg.train.micro_batch_size, cfg.train.global_batch_size = 4, 8
    cfg.parallel.zero_stage, cfg.train.precision = stage, precision
    return cfg


def overhead(pairs: int) -> dict:
    """Median step time of `Engine.train_step` and of the bare loop, steps interleaved A B B A.

    Both loops run in this process on the same batches, one after the other step by step, so a
    neighbour's load hits both alike; the order alternates so neither always runs second."""
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

    steps = {"anvil": anvil_step, "bare": bare_step}
    times = {"anvil": [], "bare": []}
    for fn in steps.values():  # warm-up: allocator, Adam state
        for _ in range(3):
            fn()
    cpu = time.process_time()
    for i in range(pairs):
        for name in ("anvil", "bare") if i % 2 == 0 else ("bare", "anvil"):
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    a, b = statistics.median(times["anvil"]), statistics.median(times["bare"])
    return {
        "model": f"{cfg.model.n_layers} layers, d_model {cfg.model.d_model}, seq {T}, vocab {V}",
        "batch": f"{len(batches)} micro-batches of {B} (gradient accumulation), AdamW, clip {t.grad_clip}",
        "threads": torch.get_num_threads(),
        "steps each": pairs,
        "cpu_s": round(time.process_time() - cpu, 1),
        "bare median s": b,
        "anvil median s": a,
        "bare min s": min(times["bare"]),
        "anvil min s": min(times["anvil"]),
        "overhead %": 100 * (a / b - 1),
    }


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
        seen: dict = {"grads": 0}
        original = inner.step
        masters: dict = {}  # union over calls: ZeRO 1/2 step the optimizer once per param group

        def measured_step(*args, **kwargs):
            module_params = list(module.parameters())
            ids = {id(p) for p in module_params}
            z3 = getattr(engine.ds.optimizer, "fp32_partitioned_groups_flat", None)
            # ZeRO-3 hands the optimizer its fp32 partitions (with their grads)
            here = list(z3) if z3 is not None else [p for g in inner.param_groups for p in g["params"]]
            masters.update({id(p): p for p in here if id(p) not in ids})
            local = [getattr(p, "ds_tensor", p) for p in module_params]
            grads = [p.grad for p in module_params] + [p.grad for p in here if id(p) not in ids]
            state = [v for s in inner.state.values() for v in s.values() if torch.is_tensor(v) and v.numel() > 1]
            seen.update(
                params=_tensor_bytes(local),
                grads=max(seen["grads"], _tensor_bytes(grads)),  # the most alive at one call
                optim=_tensor_bytes(state) + _tensor_bytes(masters.values()),
            )
            return original(*args, **kwargs)

        inner.step = measured_step
        x = torch.randint(0, cfg.model.vocab_size, (cfg.train.micro_batch_size, cfg.model.seq_len))
        for _ in range(2):  # Adam allocates its moments at the first step: measure at the second
            seen["grads"] = 0
            masters.clear()
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


def zero_table(worlds: list[int], precisions: list[str]) -> list[dict]:
    from tests.helpers.dist import run_distributed

    rows = []
    for precision in precisions:
        for world in worlds:
            for r in run_distributed(_zero_worker, world, precision, timeout=900)[0]:
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


ZERO_QUANTITY = (
    "MB per rank, measured: live tensors reachable from the module and optimizer at the optimizer "
    "step (DeepSpeed's flat communication buffers not counted), against the ZeRO paper's formula"
)


def overhead_row(r: dict) -> dict:
    over = r["overhead %"]
    return row(
        "Trainer step overhead: Engine.train_step (DeepSpeed ZeRO-0, skip guard, LR setting) vs a bare "
        f"PyTorch loop, same model ({r['model']}) and batches, 1 process",
        f"wall s per step, median of {r['steps each']} interleaved steps each",
        f"{r['anvil median s']:.3f} s/step",
        f"{r['bare median s']:.3f} s/step (bare PyTorch)",
        f"{over:+.1f}% overhead",
        "<= 5%",
        over <= 5.0,
    )


def zero_row(rows: list[dict]) -> dict:
    ratios = [r["total measured/expected"] for r in rows]
    configs = sorted({f"{r['precision']} DP{r['DP']}" for r in rows})
    return row(
        f"ZeRO 0-3 model-state bytes per rank ({', '.join(configs)})",
        ZERO_QUANTITY,
        f"measured/formula {min(ratios):.2f}-{max(ratios):.2f} over {len(rows)} configurations",
        "paper: (2+2+12) Psi bf16, (4+4+8) Psi fp32, split by stage",
    )


def main() -> None:
    rec = Recorder("trainer")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=40, help="steps of each loop, interleaved (default 40)")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument(
        "--zero", action="store_true", help="also measure ZeRO bytes per rank (DP 2 and 4 processes: ~5 CPU-minutes)"
    )
    ap.add_argument("--zero-dp", type=int, nargs="+", default=[2, 4], help="DP sizes for --zero (default 2 4)")
    args = ap.parse_args()
    if args.pairs < 5:
        ap.error(f"--pairs must be at least 5, got {args.pairs}")
    record, rows = {}, []
    if not args.skip_overhead:
        r = overhead(args.pairs)
        print_table([r], title="Step time, 1 process, same model/batches/optimizer")
        record["overhead"] = r
        rows.append(overhead_row(r))
    if args.zero:
        z = zero_table(args.zero_dp, ["fp32", "bf16"])
        print_table(z, title="ZeRO model-state MB per rank, measured from live tensors / paper formula")
        record["zero"] = z
        rows.append(zero_row(z))
    else:
        print("ZeRO bytes per rank: not measured by default (several CPU-minutes of 2-4 process runs); --zero")
    rec.write(record, rows, "synthetic token batches (random ids, fixed seed)")


if __name__ == "__main__":
    main()
