"""Cost of each parallel layout on CPU ranks (gloo): step time, tokens/s, model-state bytes per rank,
communication share.

    .venv/bin/python benchmarks/parallel.py [--worlds 4 8] [--steps 5]

This documents cost, not speed-ups: a 2-core machine running 4 or 8 ranks is oversubscribed, so
model parallelism can only look slower here. Model-state bytes are the planner's closed form
(tests/framework/parallel/test_planner.py checks it against measured allocations within 2%).
Communication share: host time spent inside blocking torch.distributed collectives and
point-to-point calls (timed by wrapping them in this benchmark process only) over step time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# The repository root instead of benchmarks/ (its scripts' names shadow stdlib modules, e.g. tokenize).
sys.path[0] = str(Path(__file__).resolve().parents[1])

LAYOUTS = {
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


def _cfg(tp, pp, zero):
    from framework.config import ModelConfig, ParallelConfig, RunConfig, TrainConfig

    return RunConfig(
        model=ModelConfig(n_layers=4, d_model=128, n_heads=4, vocab_size=512, seq_len=64),
        parallel=ParallelConfig(tensor=tp, pipeline=pp, zero_stage=zero),
        train=TrainConfig(micro_batch_size=1, global_batch_size=8, lr=1e-3),
    )


def _bench(layouts, steps):
    import deepspeed
    import torch
    import torch.distributed as dist

    from framework.distributed import init_distributed
    from framework.parallel import planner, topology
    from framework.training.engine import Engine
    from framework.training.trainer import build_model

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
    _, world, device = init_distributed()
    from framework.distributed import disable_deepspeed_cpu_builds

    disable_deepspeed_cpu_builds()  # the group already exists: keep DeepSpeed from building its shm op
    deepspeed.init_distributed(dist_backend="gloo")
    rows = []
    for dp, tp, pp, zero in layouts:
        cfg = _cfg(tp, pp, zero)
        topo = topology.initialize(topology.validate_layout(cfg, world))
        engine = Engine(cfg, build_model(cfg), dp, device)
        g = torch.Generator().manual_seed(0)
        per = cfg.train.global_batch_size // dp
        times, comms = [], []
        for i in range(steps + 2):
            seqs = torch.randint(0, 512, (per, cfg.model.seq_len + 1), generator=g)
            dist.barrier()
            comm_time[0] = 0.0
            t0 = time.perf_counter()
            engine.train_step([(s[:, :-1], s[:, 1:]) for s in seqs.split(1)], 1e-3)
            if i >= 2:
                times.append(time.perf_counter() - t0)
                comms.append(comm_time[0])
        n = planner.stage_params(cfg.model, topo.layout)[topo.pp_rank]
        states = sum(planner.model_state_bytes(n, dp, zero, "fp32").values())
        step = sorted(times)[len(times) // 2]
        rows.append(
            {
                "world": world,
                "DP": dp,
                "TP": tp,
                "PP": pp,
                "ZeRO": zero,
                "step ms": 1000 * step,
                "tokens/s": cfg.train.global_batch_size * cfg.model.seq_len / step,
                "model states MB/rank": states / 1e6,
                "comm share": sum(comms) / sum(times),
            }
        )
        del engine
        topology.destroy()
        dist.barrier()
    return rows


def main() -> None:
    from framework.runtime import print_table
    from tests.helpers.dist import run_distributed

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per world size before a hang is reported")
    args = ap.parse_args()
    rows = []
    for world in args.worlds:
        per_rank = run_distributed(_bench, world, LAYOUTS[world], args.steps, timeout=args.timeout)
        for i, row in enumerate(per_rank[0]):  # rank 0's timings; model states of the most loaded rank
            row["model states MB/rank"] = max(r[i]["model states MB/rank"] for r in per_rank)
            rows.append(row)
    print_table(
        rows, title="Anvil parallel layouts on CPU ranks (gloo, fp32, 1.0M-param Llama, global batch 8 x 64 tokens)"
    )


if __name__ == "__main__":
    main()
