"""Engine: DP=2 with ZeRO 0-3 equals one process; a NaN step is skipped with weights untouched.

All four ZeRO stages run in ONE spawned 2-rank group (and the reference in one 1-rank group),
because process start-up costs far more than the steps.
"""

import math

import pytest
import torch

from framework.config import RunConfig
from framework.training import schedules
from tests.helpers.dist import run_distributed

STEPS = 10
GLOBAL_BATCH, MICRO = 8, 2


def _cfg(stage: int, precision: str = "fp32") -> RunConfig:
    cfg = RunConfig()
    cfg.model.n_layers, cfg.model.d_model, cfg.model.n_heads = 2, 32, 4
    cfg.model.vocab_size, cfg.model.seq_len = 64, 16
    cfg.parallel.zero_stage = stage
    cfg.train.precision = precision
    cfg.train.steps, cfg.train.warmup_steps, cfg.train.lr = STEPS, 2, 1e-2
    cfg.train.micro_batch_size, cfg.train.global_batch_size = MICRO, GLOBAL_BATCH
    return cfg


def _data():
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, 64, (STEPS * GLOBAL_BATCH, 17), generator=g)


def _run_stages(stages, nan_step=None):
    """Train each ZeRO stage for STEPS steps; return per-stage global losses (and skip facts)."""
    import torch.distributed as dist

    from framework.data.datasets import micro_batch_indices
    from framework.distributed import init_distributed
    from framework.training.engine import Engine
    from framework.training.trainer import _all_reduce_mean, build_model

    rank, world, device = init_distributed()
    data = _data()
    out = {}
    for stage in stages:
        cfg = _cfg(stage)
        engine = Engine(cfg, build_model(cfg), world, device)
        losses, norms, applied, frozen = [], [], [], None
        for step in range(STEPS):
            mbs = [
                (data[idx, :-1], data[idx, 1:])
                for idx in micro_batch_indices(step * GLOBAL_BATCH, GLOBAL_BATCH, MICRO, rank, world)
            ]
            if nan_step is not None and step == nan_step:
                before = engine.full_state_dict()
            # inject on rank 0 only: the skip decision must still be taken by every rank
            res = engine.train_step(
                mbs,
                schedules.lr_at(step, cfg.train),
                inject_nan=nan_step is not None and step == nan_step and rank == 0,
            )
            losses.append(float(_all_reduce_mean(res.loss.reshape(1))[0]))
            norms.append(res.grad_norm)
            applied.append(res.applied)
            if nan_step is not None and step == nan_step:
                after = engine.full_state_dict()
                if rank == 0:
                    frozen = all(torch.equal(before[k], after[k]) for k in before)
        out[stage] = {
            "losses": losses,
            "norms": norms,
            "applied": applied,
            "frozen": frozen,
            "final": engine.full_state_dict(),
        }
        dist.barrier()
    return out


def _parity_then_nan(stages, nan_step):
    return {"parity": _run_stages(stages), "nan": _run_stages(stages, nan_step)}


NAN_STEP = 3


@pytest.fixture(scope="module")
def reference():
    return run_distributed(_run_stages, 1, [0], timeout=180)[0][0]


@pytest.fixture(scope="module")
def dp2():
    """One 2-rank group runs all four stages twice: clean, then with a NaN injected at NAN_STEP."""
    return run_distributed(_parity_then_nan, 2, [0, 1, 2, 3], NAN_STEP, timeout=400)


def test_dp2_zero_0_to_3_match_one_process(reference, dp2):
    ref = reference["losses"]
    assert ref[-1] < ref[0]  # it learns something
    for stage, res in dp2[0]["parity"].items():
        diff = max(abs(a - b) for a, b in zip(res["losses"], ref))
        assert diff < 1e-5, f"ZeRO-{stage} at DP=2 differs from one process by {diff:.2e}: {res['losses']} vs {ref}"
        assert all(res["applied"])
        wdiff = max((res["final"][k] - v).abs().max().item() for k, v in reference["final"].items())
        assert wdiff < 1e-4, f"ZeRO-{stage}: final weights differ by {wdiff:.2e}"
    assert dp2[0]["parity"][3]["losses"] == dp2[1]["parity"][3]["losses"]  # both ranks agree


def test_nan_step_is_skipped_with_weights_untouched_at_every_stage(dp2):
    for stage, res in dp2[0]["nan"].items():
        assert res["applied"] == [s != NAN_STEP for s in range(STEPS)], f"ZeRO-{stage}: {res['applied']}"
        assert res["frozen"] is True, f"ZeRO-{stage}: weights changed on the skipped step"
        assert math.isnan(res["losses"][NAN_STEP])
        assert all(math.isfinite(x) for i, x in enumerate(res["losses"]) if i != NAN_STEP), f"ZeRO-{stage}"
        assert dp2[1]["nan"][stage]["applied"] == res["applied"]  # rank 1 (no NaN of its own) skipped too
        # the run goes on: losses after the skipped step still fall
        assert res["losses"][-1] < res["losses"][NAN_STEP - 1]
