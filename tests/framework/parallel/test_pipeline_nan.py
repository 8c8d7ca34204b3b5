"""`train.inject_nan_at` under pipeline parallelism: the last stage's loss turns NaN, every stage
skips the update (weights bit-identical), and the next step trains normally."""

import math

import pytest

from tests.framework.parallel.test_parity import make_cfg
from tests.helpers.dist import run_distributed


def _nan_steps(zeros: list[int]) -> list[dict]:
    import torch.distributed as dist

    out = []
    for zero in zeros:
        out.append(_nan_step(zero))
        dist.barrier()
    return out


def _nan_step(zero: int) -> dict:
    import deepspeed
    import torch

    from framework.distributed import disable_deepspeed_cpu_builds, init_distributed
    from framework.parallel import topology
    from framework.training.engine import Engine
    from framework.training.trainer import build_model

    _, world, device = init_distributed()
    disable_deepspeed_cpu_builds()
    deepspeed.init_distributed(dist_backend="gloo")
    cfg = make_cfg(pipeline=2, zero=zero)
    topology.initialize(topology.validate_layout(cfg, world))
    engine = Engine(cfg, build_model(cfg), 1, device)
    g = torch.Generator().manual_seed(5)
    batch = [(x[:, :-1], x[:, 1:]) for x in torch.randint(0, 64, (4, 17), generator=g).split(1)]
    before = [p.detach().clone() for p in engine.module.parameters()]
    bad = engine.train_step(batch, 1e-2, inject_nan=True)
    unchanged = all(torch.equal(a, p.detach()) for a, p in zip(before, engine.module.parameters()))
    good = engine.train_step(batch, 1e-2)
    changed = any(not torch.equal(a, p.detach()) for a, p in zip(before, engine.module.parameters()))
    topology.destroy()
    return {
        "bad_applied": bad.applied,
        "bad_loss": float(bad.loss),
        "unchanged": unchanged,
        "good_applied": good.applied,
        "good_loss": float(good.loss),
        "changed": changed,
    }


@pytest.mark.slow
def test_injected_nan_is_skipped_under_pipeline_parallelism():
    per_rank = run_distributed(_nan_steps, 2, [0, 1], timeout=300)
    for zero in (0, 1):
        results = [ranks[zero] for ranks in per_rank]
        _check(results, zero)


def _check(results: list[dict], zero: int) -> None:
    for rank, r in enumerate(results):
        assert not r["bad_applied"] and r["unchanged"], f"ZeRO-{zero} rank {rank}: NaN step applied: {r}"
        assert r["good_applied"] and r["changed"] and math.isfinite(r["good_loss"]), f"ZeRO-{zero} rank {rank}: {r}"
    assert math.isnan(results[1]["bad_loss"]), results  # the last stage saw the injected NaN loss
