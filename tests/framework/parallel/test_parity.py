"""The parity matrix: every (DP, TP, PP) layout and valid ZeRO stage gives one process's losses.

Five fp32 steps of a tiny Llama (plus tied embeddings, sequence parallelism and activation
checkpointing variants) through
Anvil's real path (`trainer.build_model` -> `parallel.parallelize` -> `training.Engine`) must equal
a plain single-process PyTorch AdamW loop within 1e-5. One process group per world size (2, 4, 8)
runs all of that world size's layouts, re-making the groups between them; the 8-rank layouts run in
tests/framework/checkpoint/test_reshard.py's 8-rank session.
"""

import pytest
import torch

from framework.config import ModelConfig, ParallelConfig, RunConfig, TrainConfig
from tests.helpers.dist import run_distributed

STEPS, GLOBAL_BATCH, LR = 5, 4, 1e-2


def make_cfg(
    tensor=1,
    pipeline=1,
    zero=0,
    tied=False,
    sp=False,
    ckpt=False,
    precision="fp32",
    n_layers=2,
    global_batch=GLOBAL_BATCH,
) -> RunConfig:
    return RunConfig(
        seed=7,
        model=ModelConfig(n_layers=n_layers, d_model=32, n_heads=4, vocab_size=64, seq_len=16, tie_embeddings=tied),
        parallel=ParallelConfig(
            tensor=tensor, pipeline=pipeline, zero_stage=zero, sequence_parallel=sp, activation_checkpointing=ckpt
        ),
        train=TrainConfig(
            micro_batch_size=1, global_batch_size=global_batch, lr=LR, grad_clip=1.0, precision=precision
        ),
    )


def batches(cfg: RunConfig) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    return [
        torch.randint(0, cfg.model.vocab_size, (GLOBAL_BATCH, cfg.model.seq_len + 1), generator=g) for _ in range(STEPS)
    ]


def reference_losses(cfg: RunConfig, global_batches: list | None = None) -> list[float]:
    """One process, plain PyTorch: the numbers every layout must reproduce (default: `batches(cfg)`)."""
    from framework.training.engine import param_groups
    from framework.training.trainer import build_model

    model = build_model(cfg)
    t = cfg.train
    opt = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=LR, betas=(t.beta1, t.beta2), eps=t.adam_eps)
    out = []
    for batch in batches(cfg) if global_batches is None else global_batches:
        losses = []
        for seq in batch.split(1):
            loss = model(seq[:, :-1], seq[:, 1:])
            (loss / t.global_batch_size).backward()
            losses.append(loss.item())
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad()
        out.append(sum(losses) / len(losses))
    return out


def _run_layouts(cases: list[dict]) -> list[list[float]]:
    import torch.distributed as dist

    from framework.distributed import init_distributed
    from framework.parallel import topology
    from framework.training.engine import Engine
    from framework.training.trainer import build_model

    import deepspeed

    _, world, device = init_distributed()
    from framework.distributed import disable_deepspeed_cpu_builds

    disable_deepspeed_cpu_builds()  # the group already exists: keep DeepSpeed from building its shm op
    deepspeed.init_distributed(dist_backend="gloo")  # adopt the harness's group for deepspeed.comm
    results = []
    for case in cases:
        cfg = make_cfg(**case)
        topo = topology.initialize(topology.validate_layout(cfg, world), cfg.parallel.sequence_parallel)
        dp = topo.layout.data
        engine = Engine(cfg, build_model(cfg), dp, device)
        per_rank = GLOBAL_BATCH // dp
        losses = []
        for batch in batches(cfg):
            mine = batch[topo.dp_rank * per_rank : (topo.dp_rank + 1) * per_rank]
            micro = [(s[:, :-1], s[:, 1:]) for s in mine.split(1)]
            loss = engine.train_step(micro, LR).loss.reshape(1).clone()
            dist.all_reduce(loss)  # mean over data-parallel replicas (tensor/pipeline peers agree)
            losses.append(loss.item() / world)
        results.append(losses)
        del engine
        topology.destroy()
        dist.barrier()
    return results


WORLD_CASES = {
    2: [dict(zero=z) for z in (0, 1, 2, 3)]  # (2,1,1)
    + [dict(tensor=2, zero=z) for z in (0, 1, 2, 3)]  # (1,2,1)
    + [dict(pipeline=2, zero=z) for z in (0, 1)]  # (1,1,2)
    + [
        dict(pipeline=2, zero=0, tied=True),
        dict(tensor=2, zero=1, sp=True),
        dict(pipeline=2, zero=1, ckpt=True),
        dict(tensor=2, zero=0, ckpt=True),
    ],
    4: [dict(tensor=2, zero=z) for z in (0, 1, 2, 3)]  # (2,2,1)
    + [dict(pipeline=2, zero=z) for z in (0, 1)]  # (2,1,2)
    + [dict(tensor=2, pipeline=2, zero=z) for z in (0, 1)],  # (1,2,2)
}
# (2,2,2) at ZeRO-0, ZeRO-1 and ZeRO-1 with tied embeddings: in test_reshard's 8-rank session (one
# 8-process start-up fewer), compared with `reference_losses` the same way.


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_parity_matrix(world):
    cases = WORLD_CASES[world]
    refs = {}
    per_rank = run_distributed(_run_layouts, world, cases, timeout=420)
    for i, case in enumerate(cases):
        key = case.get("tied", False)
        if key not in refs:
            refs[key] = reference_losses(make_cfg(tied=key))
        for rank, results in enumerate(per_rank):
            diff = max(abs(a - b) for a, b in zip(results[i], refs[key]))
            assert diff < 1e-5, f"world {world} {case} rank {rank}: {results[i]} vs {refs[key]} (max diff {diff:.2e})"


BF16_TOL = 2e-2  # bf16 keeps 8 mantissa bits: layouts round partial sums differently (measured <= 6.7e-3)
BF16_CASES = [
    dict(zero=1),
    dict(zero=3),
    dict(tensor=2, zero=1),
    dict(pipeline=2, zero=1),
    dict(tensor=2, pipeline=2, zero=1),
]


@pytest.mark.slow
def test_bf16_parity_on_four_ranks():
    """bf16 at DP4 ZeRO-1/3, DP2 x TP2, DP2 x PP2, TP2 x PP2 against one bf16 process at ZeRO-1 (fp32
    master weights and fp32 gradient accumulation, as every case here) within BF16_TOL. (One process at
    ZeRO-0 accumulates micro-batch gradients in bf16, DeepSpeed's default there: a different rounding.)"""
    cases = [dict(c, precision="bf16") for c in BF16_CASES]
    four = run_distributed(_run_layouts, 4, cases, timeout=600)[0]
    one = run_distributed(_run_layouts, 1, [dict(precision="bf16", zero=1)], timeout=300)[0][0]
    fp32 = reference_losses(make_cfg())
    assert max(abs(a - b) for a, b in zip(one, fp32)) < 0.1  # bf16 tracks fp32 loosely
    for case, losses in zip(cases, four):
        diff = max(abs(a - b) for a, b in zip(losses, one))
        print(f"bf16 {case}: max diff {diff:.2e}")
        assert diff < BF16_TOL, f"bf16 {case}: {losses} vs one process {one} (max diff {diff:.2e})"
