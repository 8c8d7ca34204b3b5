"""Cost of each parallel layout on CPU ranks (gloo): step time, tokens/s, model-state bytes per rank
(measured, next to the planner's closed form), communication share.

    .venv/bin/python -P benchmarks/parallel.py [--worlds 4 8] [--all-layouts] [--steps 5]

This documents cost, not speed-ups: a 2-core machine running 4 or 8 ranks is oversubscribed, so
model parallelism can only look slower here. Model: a 1.0M-parameter Llama (4 layers, d_model 128,
512-token vocabulary), fp32, global batch 8 x 64 tokens of uniform random ids (no corpus: the
token values do not change the cost).

- step time: median over `--steps` timed steps (after 2 warm-up steps), rank 0's wall clock;
  tokens/s = global batch tokens / step time. Each rank runs one thread (OMP_NUM_THREADS=1, as
  torchrun sets it): with more, 4-8 ranks on 2 cores thrash.
- model-state MB per rank, measured: after the timed steps one more step runs with the optimizer's
  `step` wrapped; just before it, the bytes of every live CPU tensor storage of the rank (deduplicated
  by storage, found through the garbage collector) minus the same count taken before the engine was
  built: parameters, reduced gradients, Adam moments and fp32 masters, and whatever buffers
  DeepSpeed keeps alive at that moment. The largest rank is reported. Next to it, the planner's
  closed form (`framework.parallel.planner.model_state_bytes` for the rank's pipeline stage), which
  `anvil plan` prints.
- communication share: host time spent inside blocking torch.distributed collectives and
  point-to-point calls (timed by wrapping them in this benchmark process only) over step time.

Defaults (what `make bench` runs): 4 ranks at DP4 ZeRO-0/1/3, DP2xTP2 Z1, DP2xPP2 Z1 and 8 ranks
at DP2xTP2xPP2 Z1 (195 CPU-seconds; 4 minutes wall on the shared 2-core machine at load average
8-15: each world pays ~30-60 s of start-up for its spawned ranks). `--all-layouts` adds DP1xTP2xPP2 Z1 and TP4 Z0 on 4 ranks and DP8 Z1,
DP4xTP2 Z1, DP4xPP2 Z1 and TP4xPP2 Z0 on 8.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

# The repository root instead of benchmarks/ (its scripts' names shadow stdlib modules, e.g. tokenize).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from benchmarks.common import Recorder, row  # noqa: E402

DEFAULT_LAYOUTS = {
    4: [(4, 1, 1, 0), (4, 1, 1, 1), (4, 1, 1, 3), (2, 2, 1, 1), (2, 1, 2, 1)],
    8: [(2, 2, 2, 1)],
}
ALL_LAYOUTS = {
    4: [(4, 1, 1, 0), (4, 1, 1, 1), (4, 1, 1, 3), (2, 2, 1, 1), (2, 1, 2, 1), (1, 2, 2, 1), (1, 4, 1, 0)],
    8: [(8, 1, 1, 1), (4, 2, 1, 1), (4, 1, 2, 1), (2, 2, 2, 1), (1, 4, 2, 0)],
}
COMM = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter_tensor",
    "broadcast",
    "send",
    "recv",
    "isend",
    "irecv",
    "barrier",
    "gather_object",
    "all_gather_object",
    "broadcast_object_list",
)
MODEL = "1.0M-param Llama (4 layers, d 128, vocab 512), fp32, global batch 8 x 64 tokens"


def label(dp: int, tp: int, pp: int, zero: int) -> str:
    return f"DP{dp}" + (f"xTP{tp}" if tp > 1 else "") + (f"xPP{pp}" if pp > 1 else "") + f" Z{zero}"


def _cfg(tp, pp, zero):
    from framework.config import ModelConfig, ParallelConfig, RunConfig, TrainConfig

    return RunConfig(
        model=ModelConfig(n_layers=4, d_model=128, n_heads=4, vocab_size=512, seq_len=64),
        parallel=ParallelConfig(tensor=tp, pipeline=pp, zero_stage=zero),
        train=TrainConfig(micro_batch_size=1, global_batch_size=8, lr=1e-3),
    )


def _bench(layouts, steps):
    """On each rank: per layout, warm-up + timed steps, then one step measuring live model state."""
    import deepspeed
    import torch
    import torch.distributed as dist

    from framework.distributed import disable_deepspeed_cpu_builds, init_distributed
    from framework.parallel import topology

    comm_time = [0.0]

    def timed(fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                comm_time[0] += time.perf_counter() - t0

        return wrapper

    for name in COMM:
        if hasattr(dist, name):
            setattr(dist, name, timed(getattr(dist, name)))
    torch.set_num_threads(1)  # one thread per rank, as torchrun sets it: ranks already oversubscribe the cores
    _, world, device = init_distributed()
    disable_deepspeed_cpu_builds()  # the group already exists: keep DeepSpeed from building its shm op
    deepspeed.init_distributed(dist_backend="gloo")
    out = []
    for layout in layouts:
        cfg = _cfg(*layout[1:])
        topo = topology.initialize(topology.validate_layout(cfg, world))
        out.append(_one_layout(cfg, topo, layout, device, steps, comm_time))
        topology.destroy()  # the engine died with _one_layout's frame
        gc.collect()
        dist.barrier()
    return out


def _one_layout(cfg, topo, layout, device, steps: int, comm_time: list) -> dict:
    """Warm-up and timed steps, then one step with the live model state measured; the engine and
    its buffers are freed when this returns."""
    import torch
    import torch.distributed as dist

    from framework.parallel import planner
    from framework.training.engine import Engine
    from framework.training.memory import live_cpu_tensor_bytes
    from framework.training.trainer import build_model

    dp, tp, pp, zero = layout
    gc.collect()
    base = live_cpu_tensor_bytes()
    engine = Engine(cfg, build_model(cfg), dp, device)
    g = torch.Generator().manual_seed(0)
    per = cfg.train.global_batch_size // dp

    def step():
        seqs = torch.randint(0, cfg.model.vocab_size, (per, cfg.model.seq_len + 1), generator=g)
        engine.train_step([(s[:, :-1], s[:, 1:]) for s in seqs.split(1)], 1e-3)

    times, comms = [], []
    for i in range(steps + 2):
        dist.barrier()
        comm_time[0] = 0.0
        t0 = time.perf_counter()
        step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
            comms.append(comm_time[0])
    opt = engine.ds.optimizer  # DeepSpeed's (ZeRO) optimizer, or the client one at ZeRO-0
    original, seen = opt.step, []

    def measured_step(*args, **kwargs):  # reduced gradients and Adam moments are live here
        gc.collect()
        seen.append(live_cpu_tensor_bytes() - base)
        return original(*args, **kwargs)

    opt.step = measured_step
    dist.barrier()
    step()
    opt.step = original
    n = planner.stage_params(cfg.model, topo.layout)[topo.pp_rank]
    formula = planner.model_state_bytes(n, dp, zero, "fp32", pp)
    return {
        "layout": [dp, tp, pp, zero],
        "step_s": times,
        "comm_s": comms,
        "model_state_bytes_measured": seen[-1] if seen else None,
        "model_state_bytes_formula": sum(formula.values()),
        "formula_split": formula,
    }


def summarise(world: int, per_rank: list[list[dict]]) -> list[dict]:
    """One entry per layout: rank 0's step time, the most loaded rank's model state."""
    rows = []
    for i, r0 in enumerate(per_rank[0]):
        dp, tp, pp, zero = r0["layout"]
        step = sorted(r0["step_s"])[len(r0["step_s"]) // 2]
        measured = [r[i]["model_state_bytes_measured"] for r in per_rank]
        formula = [r[i]["model_state_bytes_formula"] for r in per_rank]
        top = max(range(len(measured)), key=lambda k: measured[k] if measured[k] is not None else -1)
        rows.append(
            {
                "world": world,
                "layout": label(dp, tp, pp, zero),
                "step ms": round(1000 * step, 1),
                "tokens/s": round(8 * 64 / step),
                "comm share": round(sum(r0["comm_s"]) / sum(r0["step_s"]), 3),
                "state MB/rank measured": None if measured[top] is None else round(measured[top] / 1e6, 2),
                "state MB/rank formula": round(max(formula) / 1e6, 2),
                "measured per rank MB": [None if m is None else round(m / 1e6, 2) for m in measured],
            }
        )
    return rows


def table_rows(results: list[dict], failures: dict[int, str]) -> list[dict]:
    """The performance-table lines: step cost per world size, model state measured vs formula."""
    out = []
    for world in sorted({r["world"] for r in results}):
        mine = [r for r in results if r["world"] == world]
        out.append(
            row(
                f"parallel.py: step time per layout, {world} CPU ranks (gloo) on an oversubscribed 2-core machine, "
                f"{MODEL}: documents cost, not speed-up",
                "ms per step, wall, median (tokens/s)",
                "; ".join(f"{r['layout']} {r['step ms']:.0f} ms ({r['tokens/s']:,} tok/s)" for r in mine),
            )
        )
    if results:
        ratios = [
            r["state MB/rank measured"] / r["state MB/rank formula"]
            for r in results
            if r["state MB/rank measured"] is not None and r["state MB/rank formula"]
        ]
        out.append(
            row(
                "parallel.py: model-state MB on the most loaded rank per layout (same runs)",
                "MB, measured (live CPU tensors at the optimizer step); [formula (planner closed form)]",
                "; ".join(
                    f"{r['layout']}{' (8 ranks)' if r['world'] == 8 else ''} "
                    f"{'n/a' if r['state MB/rank measured'] is None else format(r['state MB/rank measured'], '.1f')} "
                    f"[{r['state MB/rank formula']:.1f}]"
                    for r in results
                ),
                ratio=f"measured/formula {min(ratios):.2f}-{max(ratios):.2f}" if ratios else "",
            )
        )
    for world, why in failures.items():
        out.append(row(f"parallel.py: {world} CPU ranks", "not measured", f"not measured: {why}"))
    return out


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def parse_layout(text: str) -> tuple:
    try:
        parts = tuple(int(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or min(parts[:3]) < 1 or parts[3] not in (0, 1, 2, 3):
        raise argparse.ArgumentTypeError(f"expected DP,TP,PP,ZeRO such as 4,1,1,3; got {text!r}")
    if parts[0] * parts[1] * parts[2] < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: a layout needs at least 2 ranks")
    return parts


def main() -> None:
    rec = Recorder("parallel")
    from framework.runtime import print_table
    from tests.helpers.dist import DistributedTestError, run_distributed

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", type=int, nargs="+", default=[4, 8], choices=[4, 8], help="world sizes (default 4 8)")
    ap.add_argument("--all-layouts", action="store_true", help="7 layouts on 4 ranks and 5 on 8 (about 3x longer)")
    ap.add_argument(
        "--layouts", type=parse_layout, nargs="+", metavar="DP,TP,PP,ZERO", help="these layouts only (e.g. 4,1,1,0)"
    )
    ap.add_argument("--steps", type=int, default=5, help="timed steps per layout, after 2 warm-up steps (default 5)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per world size before a hang is reported")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    layouts = ALL_LAYOUTS if args.all_layouts else DEFAULT_LAYOUTS
    if args.layouts:
        layouts = {}
        for layout in args.layouts:
            layouts.setdefault(layout[0] * layout[1] * layout[2], []).append(layout)
        args.worlds = sorted(layouts)
    results, failures, raw = [], {}, {}
    for world in args.worlds:
        t0, cpu0 = time.perf_counter(), _children_cpu()
        try:
            per_rank = run_distributed(
                _bench, world, layouts[world], args.steps, timeout=args.timeout, env={"OMP_NUM_THREADS": "1"}
            )
        except DistributedTestError as exc:  # report it and go on with the other world size
            failures[world] = str(exc).splitlines()[0][:300]
            print(f"{world} ranks failed: {exc}", flush=True)
            continue
        raw[world] = {
            "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(_children_cpu() - cpu0, 1),
            "per_rank": per_rank,
        }
        results += summarise(world, per_rank)
    if results:
        print_table(
            [{k: v for k, v in r.items() if k != "measured per rank MB"} for r in results],
            title=f"Anvil parallel layouts on CPU ranks (gloo, {MODEL})",
        )
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = sum(u.ru_utime + u.ru_stime for u in usage)
    rows = table_rows(results, failures)
    rec.write(
        {
            "model": MODEL,
            "steps": args.steps,
            "layouts": results,
            "failures": failures,
            "cpu_s": round(cpu_s, 1),
            "world_wall_s": {w: raw[w]["wall_s"] for w in raw},
            "world_cpu_s": {w: raw[w]["cpu_s"] for w in raw},
            "per_rank": {w: raw[w]["per_rank"] for w in raw},
        },
        rows,
        "synthetic token ids (uniform random, seed 0); no corpus",
    )
    for r in rows:
        print(f"{r['what']}\n  {r['quantity']}: {r['anvil']} {r['ratio']}")


if __name__ == "__main__":
    main()
