"""The memory planner: closed-form counts equal the model, model-state bytes equal what the engine
really allocates (within 2%) at several layouts and ZeRO stages, and `rank_memory`'s per-phase peaks
(start-up, steps, save, load) match the host memory `anvil train` measures on CPU ranks."""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from framework.config import ModelConfig, ParallelConfig, RunConfig, TrainConfig
from framework.parallel import planner
from framework.training.memory import live_cpu_tensor_bytes
from framework.parallel.topology import Layout
from tests.helpers.dist import run_distributed


@pytest.mark.parametrize("arch,tied", [("llama", False), ("llama", True), ("gpt2", False), ("gpt2", True)])
def test_closed_form_counts_match_the_model(arch, tied):
    from framework.model.transformer import Transformer

    m = ModelConfig(
        arch=arch,
        n_layers=3,
        d_model=64,
        n_heads=4,
        n_kv_heads=2 if arch == "llama" else None,
        vocab_size=256,
        seq_len=32,
        tie_embeddings=tied,
    )
    assert planner.stage_params(m, Layout(1, 1, 1)) == [Transformer(m).num_params()]


def test_parse_bytes_and_errors():
    assert planner.parse_bytes("80GB") == 80 * 10**9
    assert planner.parse_bytes("96GiB") == 96 * 2**30
    with pytest.raises(ValueError, match="cannot read a memory size"):
        planner.parse_bytes("lots")


def test_activation_estimates_shrink_with_checkpointing_and_sequence_parallelism():
    m = ModelConfig(n_layers=32, d_model=4096, n_heads=32, vocab_size=32000, seq_len=4096)
    lay = Layout(1, 4, 1)
    full = planner.activation_bytes(m, lay, 1, 8, "bf16", False)
    assert planner.activation_bytes(m, lay, 1, 8, "bf16", True) < full / 5
    assert planner.activation_bytes(m, lay, 1, 8, "bf16", False, sequence_parallel=True) < full
    # Korthikanti Eq. 2 (t=1, attention matrix stored): s b h (34 + 5 a s / h) per layer, 16-bit.
    one = ModelConfig(n_layers=1, d_model=64, n_heads=4, vocab_size=64, seq_len=128)
    logits = 2 * 4 * 128 * 64
    want = 128 * 64 * (34 + 5 * 4 * 128 / 64) + logits
    assert planner.activation_bytes(one, Layout(), 1, 1, "bf16", False, flash=False) == pytest.approx(want)


def test_recommendation_prefers_data_parallelism_that_fits():
    cfg = RunConfig(
        model=ModelConfig(n_layers=4, d_model=256, n_heads=8, vocab_size=512, seq_len=64),
        train=TrainConfig(micro_batch_size=1, global_batch_size=8),
    )
    best = planner.recommend(planner.plan(cfg, 4, planner.parse_bytes("80GB")))
    assert (best.layout, best.zero) == (Layout(4, 1, 1), 1)
    # 64 MB per device: a 70B model fits nowhere; a small one needs model parallelism or ZeRO.
    big = RunConfig(
        model=ModelConfig(n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, vocab_size=32000, seq_len=4096)
    )
    assert planner.recommend(planner.plan(big, 8, planner.parse_bytes("80GB"))) is None


def test_recommendation_respects_the_global_batch():
    # global batch 6 with micro-batch 1 cannot be split over DP 4: check_layout refuses it, so must the planner.
    cfg = RunConfig(
        model=ModelConfig(n_layers=4, d_model=256, n_heads=8, vocab_size=512, seq_len=64),
        train=TrainConfig(micro_batch_size=1, global_batch_size=6),
    )
    plans = planner.plan(cfg, 4, planner.parse_bytes("80GB"))
    assert {p.layout.data for p in plans if not p.batch_ok} == {4}
    best = planner.recommend(plans)
    assert best.layout.data in (1, 2)
    cfg.parallel = ParallelConfig(tensor=best.layout.tensor, pipeline=best.layout.pipeline, zero_stage=best.zero)
    assert cfg.check_layout(4) == best.layout.data


CASES = [
    dict(zero=1),
    dict(zero=2),
    dict(tensor=2, zero=0),
    dict(tensor=2, zero=1),
    dict(pipeline=2, zero=0),
    dict(pipeline=2, zero=1),
]


def _cfg(tensor=1, pipeline=1, zero=0) -> RunConfig:
    return RunConfig(
        model=ModelConfig(n_layers=4, d_model=128, n_heads=4, vocab_size=512, seq_len=8),
        parallel=ParallelConfig(tensor=tensor, pipeline=pipeline, zero_stage=zero),
        train=TrainConfig(micro_batch_size=1, global_batch_size=2),
    )


def _measure(cases):
    import deepspeed
    import torch.distributed as dist

    from framework.distributed import init_distributed
    from framework.parallel import topology
    from framework.training.engine import Engine
    from framework.training.trainer import build_model

    _, world, device = init_distributed()
    from framework.distributed import disable_deepspeed_cpu_builds

    disable_deepspeed_cpu_builds()  # the group already exists: keep DeepSpeed from building its shm op
    deepspeed.init_distributed(dist_backend="gloo")
    out = []
    for case in cases:
        cfg = _cfg(**case)
        topo = topology.initialize(topology.validate_layout(cfg, world))
        gc.collect()
        base = live_cpu_tensor_bytes()
        engine = Engine(cfg, build_model(cfg), topo.layout.data, device)
        opt = engine.ds.optimizer  # DeepSpeed's (ZeRO) optimizer, or the client one at ZeRO-0
        original_step, seen = opt.step, []

        def measured_step(*args, **kwargs):  # reduced gradients and (from step 2) Adam moments live
            gc.collect()
            seen.append(live_cpu_tensor_bytes() - base)
            return original_step(*args, **kwargs)

        opt.step = measured_step
        g = torch.Generator().manual_seed(0)
        for _ in range(2):
            seqs = torch.randint(0, 512, (cfg.train.global_batch_size // topo.layout.data, 9), generator=g)
            engine.train_step([(s[:, :-1], s[:, 1:]) for s in seqs.split(1)], 1e-3)
        opt.step = original_step
        n = planner.stage_params(cfg.model, topo.layout)[topo.pp_rank]
        want = sum(planner.model_state_bytes(n, topo.layout.data, cfg.parallel.zero_stage, "fp32").values())
        out.append((case, seen[-1], want))
        del engine, opt
        original_step = None  # drop the last reference to this engine before the next case measures
        topology.destroy()
        dist.barrier()
    return out


@pytest.mark.slow
def test_model_state_bytes_match_engine_allocations():
    for rank_results in run_distributed(_measure, 2, CASES, timeout=300):
        for case, measured, planned in rank_results:
            assert abs(measured - planned) / planned < 0.02, f"{case}: measured {measured} B, planned {planned:.0f} B"


def test_rank_memory_phases_device_and_host():
    from dataclasses import replace

    cfg = RunConfig(
        model=ModelConfig(n_layers=4, d_model=256, n_heads=8, vocab_size=512, seq_len=64),
        train=TrainConfig(micro_batch_size=1, global_batch_size=8),
    )
    for precision in ("fp32", "bf16"):
        c = replace(cfg, train=replace(cfg.train, precision=precision))
        for layout in planner.valid_layouts(cfg.model, 4):
            for zero in (0, 1) if layout.pipeline > 1 else (0, 1, 2, 3):
                cpu, gpu = planner.rank_memory(c, layout, zero), planner.rank_memory(c, layout, zero, device="cuda")
                for phase in ("startup", "steps", "save", "load"):
                    assert cpu[phase] == cpu[f"host_{phase}"] > 0  # a CPU rank's device is its host
                    assert 0 <= gpu[f"host_{phase}"] < gpu[phase] or phase in ("steps", "load")
                n = max(planner.stage_params(c.model, layout))
                states = sum(planner.model_state_bytes(n, layout.data, zero, precision, layout.pipeline).values())
                assert gpu["steps"] >= states  # the steady states are inside the step peak
                assert gpu["host_steps"] == 0 and gpu["host_load"] > gpu["host_startup"]  # mapped checkpoint bytes
    with pytest.raises(ValueError, match="pipeline"):
        planner.rank_memory(cfg, Layout(2, 1, 2), 3)

    # ZeRO-3's partitions shrink with DP, ZeRO-0's states do not.
    def at(dp: int, zero: int) -> dict:
        return planner.rank_memory(cfg, Layout(dp, 1, 1), zero)

    assert at(4, 3)["steps"] < at(2, 3)["steps"] and at(4, 0)["startup"] == at(2, 0)["startup"]


def test_recommendation_never_picks_a_layout_whose_startup_does_not_fit():
    # fp32 ZeRO-2 over DP 8: 4 + 12/8 bytes/param between steps, but start-up flattens the fp32
    # parameters into a copy (8 bytes/param for a moment).
    cfg = RunConfig(
        model=ModelConfig(n_layers=8, d_model=1024, n_heads=8, vocab_size=1024, seq_len=64),
        train=TrainConfig(micro_batch_size=1, global_batch_size=8),
    )
    z2 = next(p for p in planner.plan(cfg, 8, None) if p.layout == Layout(8, 1, 1) and p.zero == 2)
    n = max(planner.stage_params(cfg.model, Layout(8, 1, 1)))
    assert z2.startup == 8 * n and z2.model_states + z2.act <= z2.steps < z2.startup
    device = int((z2.steps + z2.startup) / 2 / planner.HEADROOM)  # the steps fit, the start-up does not
    plans = planner.plan(cfg, 8, device)
    z2 = next(p for p in plans if p.layout == Layout(8, 1, 1) and p.zero == 2)
    assert not z2.fits and not z2.fits_ckpt
    best = planner.recommend(plans)
    assert best is not None and best.startup <= planner.HEADROOM * device and best.total <= planner.HEADROOM * device


# ------------------------------------------------------------------------------------------------
# Measured host memory of `anvil train` on CPU ranks against rank_memory(..., device="cpu").

ROOT = Path(__file__).resolve().parents[3]
ANVIL = str(Path(sys.executable).parent / "anvil")
MODEL = dict(n_layers=4, d_model=896, n_heads=8, vocab_size=384, seq_len=32)  # 39.7M parameters
# (name, DP, TP, PP, ZeRO, precision): one run_dir, each run resumes the previous run's checkpoint
# (layout-free) for 2 more steps, then evaluates and saves; the first starts fresh. Tensor
# parallelism comes first: a rank reading a narrower box than the writer's (a column slice of a
# row-parallel weight saved whole) reads whole rows, more than `rank_memory` (same layout) counts.
# DeepSpeed's optimizer paths (`planner.optimizer_path`) they take: bf16 (TP2), zero3, fp16 (whose
# start-up, 20 bytes/param, is its peak) and zero (PP2); adamw (fp32 ZeRO-0) was checked the same way
# by hand, and its model states are in test_model_state_bytes_match_engine_allocations.
RUNS = [
    ("TP2 ZeRO-1 bf16", 1, 2, 1, 1, "bf16"),
    ("DP2 ZeRO-3 bf16", 2, 1, 1, 3, "bf16"),
    ("DP2 ZeRO-0 bf16", 2, 1, 1, 0, "bf16"),
    ("PP2 ZeRO-1 fp32", 1, 1, 2, 1, "fp32"),
]
# Measured (peak - baseline), max over ranks, must lie within REL of the prediction plus ABS: the
# fixed overheads (HOST_FIXED_*) vary by about +-15 MiB between layouts (more with tensor
# parallelism), the model terms are exact to a few MiB. Load has REL_LOAD: the reader memory-maps
# the shards, and readahead / fault-around map neighbouring pages of what it reads (measured +2% to
# +26% of the bytes read). Dropping a term of 76 MiB (2 bytes/param of this model, 4 bytes/param of
# a DP-2 partition, TP-2 shard or PP-2 stage) from a phase where it counts puts that phase outside
# the band (checked by mutating each term of `planner._phases`); half of that may stay inside.
REL, REL_LOAD, ABS = 0.06, 0.12, 24 * planner.MiB
GB = 2**30


def _prefix(path: Path, tokens: int = 200_000) -> str:
    """A tokenized corpus of random documents (no tokenizer to train: seconds, not minutes)."""
    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    builder = IndexedDatasetBuilder(f"{path}.bin", dtype=np.uint16)
    done = 0
    while done < tokens:
        n = int(rng.integers(50, 400))
        builder.add_document(torch.from_numpy(np.append(rng.integers(1, MODEL["vocab_size"], n), 0)), [n + 1])
        done += n + 1
    builder.finalize(f"{path}.idx")
    return str(path)


def _evict(run_dir: Path) -> None:
    """Drop the checkpoint files' pages from the page cache (they are written and fsynced, so clean),
    as after a restart on another node. The reader memory-maps them; pages the writer left in the
    cache sit in large folios (Linux 6.x ext4), and touching part of a folio maps all of it, so a
    resume right after a save maps up to 50% more than it reads (measured: 174 vs 116 MiB)."""
    for path in run_dir.glob("checkpoints/*/shards/*.safetensors"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _train(run_dir: Path, prefix: str, steps: int, dp: int, tp: int, pp: int, zero: int, precision: str) -> dict:
    from tests.helpers.dist import free_port

    args = [
        "train",
        str(ROOT / "configs/train/tiny.yaml"),
        f"run_dir={run_dir}",
        f"data.paths=[{prefix}]",
        f"data.cache_dir={run_dir.parent / 'cache'}",
        *(f"model.{k}={v}" for k, v in MODEL.items()),
        "train.micro_batch_size=1",
        "train.global_batch_size=2",
        f"train.steps={steps}",
        "train.warmup_steps=1",
        "train.log_interval=1",
        "train.eval_interval=0",
        "train.eval_iters=1",
        "train.checkpoint_interval=1000",
        f"train.precision={precision}",
        f"parallel.zero_stage={zero}",
        f"parallel.tensor={tp}",
        f"parallel.pipeline={pp}",
    ]
    # glibc's default mmap threshold rises to the largest freed block, after which freed tensors stay in
    # the heap and RSS keeps them; a fixed threshold returns them, so RSS follows the live allocations.
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), ANVIL_PROGRESS="0", MALLOC_MMAP_THRESHOLD_="65536"
    )
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(dp * tp * pp),
        "--master_port",
        str(free_port()),
        ANVIL,
    ] + args
    _evict(run_dir)
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(line) for line in (run_dir / "memory.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == steps
    return lines[-1]["host_memory_gb"]


@pytest.mark.slow
def test_rank_memory_matches_measured_cpu_peaks(tmp_path):
    from dataclasses import replace

    prefix = _prefix(tmp_path / "tokens")
    run_dir = tmp_path / "run"
    base = RunConfig(model=ModelConfig(**MODEL), train=TrainConfig(micro_batch_size=1, global_batch_size=2))
    rows, bad = [], []
    for i, (name, dp, tp, pp, zero, precision) in enumerate(RUNS):
        measured = _train(run_dir, prefix, 2 * (i + 1), dp, tp, pp, zero, precision)
        cfg = replace(
            base,
            train=replace(base.train, precision=precision),
            parallel=replace(base.parallel, tensor=tp, pipeline=pp, zero_stage=zero),
        )
        predicted = planner.rank_memory(cfg, Layout(dp, tp, pp), zero, device="cpu")
        for phase in ("startup", "load", "steps", "save"):
            if phase not in measured:  # the first run resumes nothing
                continue
            got = max((p - b) * GB for p, b in zip(measured[phase], measured["baseline"]))
            want = predicted[phase]
            ok = abs(got - want) <= (REL_LOAD if phase == "load" else REL) * want + ABS
            rows.append(
                f"{name:16s} {phase:8s} measured {got / planner.MiB:7.1f} MiB  "
                f"predicted {want / planner.MiB:7.1f} MiB  {100 * (got - want) / want:+6.1f}%"
            )
            print(rows[-1], flush=True)
            if not ok:
                bad.append(rows[-1])
    assert not bad, "outside {:.0%} (load {:.0%}) + {:.0f} MiB:\n".format(REL, REL_LOAD, ABS / planner.MiB) + "\n".join(
        bad
    )
