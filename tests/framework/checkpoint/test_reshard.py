"""Sharded checkpoints reshard on load: save under one DP x TP x PP x ZeRO layout and precision,
resume under another, and the next losses equal an uninterrupted run's.

fp32: within 1e-5 of one process trained straight through ((2,2,2) ZeRO-1 -> (8,1,1) ZeRO-3, (1,2,4)
and one process; (8,1,1) ZeRO-3 -> (2,2,2); one process -> (2,1,1) ZeRO-3), and bit-identical when
the layout does not change. bf16: a resume under another layout (including the bf16 ZeRO-1 -> one
process ZeRO-0 direction that used to fail with KeyError 'exp_avg') equals the uninterrupted run
of the saving layout within BF16_TOL, and the same-layout resume is bit-identical.
"""

import pytest
import torch

from framework.configtree import to_dict
from tests.framework.parallel.test_parity import LR, make_cfg, reference_losses
from tests.helpers.dist import run_distributed

SAVE_AT, MORE = 4, 3
BF16_TOL = 2e-2  # bf16 rounds weights to 8 bits of mantissa: layouts differ in summation order
DEEP = dict(n_layers=4, global_batch=8)  # a block per stage at (1,2,4); a sample per rank at DP 8


def _batches(cfg):
    g = torch.Generator().manual_seed(321)
    return [
        torch.randint(0, cfg.model.vocab_size, (cfg.train.global_batch_size, cfg.model.seq_len + 1), generator=g)
        for _ in range(SAVE_AT + MORE)
    ]


def _session(jobs: list[dict]) -> list[list[float]]:
    """Each job: build the layout, optionally load `load_from`, train steps [start, stop), optionally save."""
    import deepspeed
    import torch.distributed as dist

    from framework.checkpoint import store
    from framework.distributed import disable_deepspeed_cpu_builds, init_distributed
    from framework.parallel import topology
    from framework.training.engine import Engine
    from framework.training.trainer import build_model

    _, world, device = init_distributed()
    disable_deepspeed_cpu_builds()
    deepspeed.init_distributed(dist_backend="gloo")
    results = []
    for job in jobs:
        cfg = make_cfg(**job["layout"])
        topo = topology.initialize(topology.validate_layout(cfg, world))
        dp = topo.layout.data
        engine = Engine(cfg, build_model(cfg), dp, device)
        start = 0
        if job.get("load_from"):
            start = store.load(store.latest_checkpoint(job["load_from"]), engine)["step"]
        losses = []
        for batch in _batches(cfg)[start : job["stop"]]:
            per = cfg.train.global_batch_size // dp
            mine = batch[topo.dp_rank * per : (topo.dp_rank + 1) * per]
            loss = engine.train_step([(s[:, :-1], s[:, 1:]) for s in mine.split(1)], LR).loss.reshape(1).clone()
            dist.all_reduce(loss)
            losses.append(loss.item() / world)
        if job.get("save_to"):
            meta = {
                "step": job["stop"],
                "consumed_samples": job["stop"] * cfg.train.global_batch_size,
                "tokens": 0,
                "dp_size": dp,
                "world_size": world,
                "zero_stage": cfg.parallel.zero_stage,
                "config": to_dict(cfg),
            }
            store.save(job["save_to"], job["stop"], engine, meta, 1, "")
        results.append(losses)
        del engine
        topology.destroy()
        dist.barrier()
    return results


def _diff(a, b) -> float:
    assert len(a) == len(b), (a, b)
    return max(abs(x - y) for x, y in zip(a, b))


@pytest.mark.slow
def test_reshard_fp32_across_eight_rank_layouts(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    z1_222, z3_811 = dict(tensor=2, pipeline=2, zero=1, **DEEP), dict(zero=3, **DEEP)
    eight = run_distributed(
        _session,
        8,
        [
            dict(layout=z1_222, stop=SAVE_AT, save_to=a),  # save (2,2,2) Z1
            dict(layout=z3_811, stop=SAVE_AT + MORE, load_from=a),  # -> (8,1,1) Z3
            dict(layout=dict(tensor=2, pipeline=4, zero=1, **DEEP), stop=SAVE_AT + MORE, load_from=a),  # -> (1,2,4) Z1
            dict(layout=z3_811, stop=SAVE_AT, save_to=b),  # save (8,1,1) Z3
            dict(layout=z1_222, stop=SAVE_AT + MORE, load_from=b),  # -> (2,2,2) Z1
            # the parity matrix's 8-rank layouts (test_parity.py): (2,2,2) ZeRO-0, ZeRO-1 with tied embeddings
            dict(layout=dict(tensor=2, pipeline=2, zero=0, **DEEP), stop=SAVE_AT),
            dict(layout=dict(tensor=2, pipeline=2, zero=1, tied=True, **DEEP), stop=SAVE_AT),
        ],
        timeout=900,
    )[0]
    c = str(tmp_path / "c")
    one = run_distributed(
        _session,
        1,
        [dict(layout=DEEP, stop=SAVE_AT + MORE, load_from=a), dict(layout=DEEP, stop=SAVE_AT, save_to=c)],
        timeout=300,
    )[0]
    two = run_distributed(
        _session, 2, [dict(layout=dict(zero=3, **DEEP), stop=SAVE_AT + MORE, load_from=c)], timeout=300
    )[0]
    cfg = make_cfg(**DEEP)
    ref = reference_losses(cfg, _batches(cfg))
    assert _diff(eight[0], ref[:SAVE_AT]) < 1e-5 and _diff(eight[3], ref[:SAVE_AT]) < 1e-5
    assert _diff(eight[5], ref[:SAVE_AT]) < 1e-5, f"(2,2,2) ZeRO-0: {eight[5]} vs {ref[:SAVE_AT]}"
    tied = make_cfg(tied=True, **DEEP)
    tied_ref = reference_losses(tied, _batches(tied))[:SAVE_AT]
    assert _diff(eight[6], tied_ref) < 1e-5, f"(2,2,2) ZeRO-1 tied: {eight[6]} vs {tied_ref}"
    want = ref[SAVE_AT:]
    for label, got in [
        ("(2,2,2)Z1 -> (8,1,1)Z3", eight[1]),
        ("(2,2,2)Z1 -> (1,2,4)Z1", eight[2]),
        ("(8,1,1)Z3 -> (2,2,2)Z1", eight[4]),
        ("(2,2,2)Z1 -> one process", one[0]),
        ("one process -> (2,1,1)Z3", two[0]),
    ]:
        assert _diff(got, want) < 1e-5, f"{label}: {got} vs uninterrupted {want}"


@pytest.mark.slow
def test_same_layout_resume_is_bit_identical_and_bf16_reshards(tmp_path):
    fp, bf = str(tmp_path / "fp32"), str(tmp_path / "bf16")
    z1 = dict(zero=1, global_batch=4)
    z1_bf = dict(z1, precision="bf16")
    two = run_distributed(
        _session,
        2,
        [
            dict(layout=z1, stop=SAVE_AT + MORE),  # 0 fp32 straight
            dict(layout=z1, stop=SAVE_AT, save_to=fp),  # 1
            dict(layout=z1, stop=SAVE_AT + MORE, load_from=fp),  # 2 same layout
            dict(layout=z1_bf, stop=SAVE_AT + MORE),  # 3 bf16 straight
            dict(layout=z1_bf, stop=SAVE_AT, save_to=bf),  # 4
            dict(layout=z1_bf, stop=SAVE_AT + MORE, load_from=bf),  # 5 same layout
            dict(layout=dict(z1_bf, tensor=2, zero=3), stop=SAVE_AT + MORE, load_from=bf),  # 6 -> (1,2,1) Z3
            dict(layout=dict(z1_bf, pipeline=2), stop=SAVE_AT + MORE, load_from=bf),  # 7 -> (1,1,2) Z1
        ],
        timeout=600,
    )[0]
    # bf16 ZeRO-1 on 2 ranks -> one process ZeRO-0 (DeepSpeed's bf16 optimizer): used to fail, KeyError 'exp_avg'
    one = run_distributed(
        _session, 1, [dict(layout=dict(z1_bf, zero=0), stop=SAVE_AT + MORE, load_from=bf)], timeout=300
    )[0]
    assert two[1] == two[0][:SAVE_AT] and two[2] == two[0][SAVE_AT:], f"fp32 same-layout resume: {two[2]} vs {two[0]}"
    assert two[4] == two[3][:SAVE_AT] and two[5] == two[3][SAVE_AT:], f"bf16 same-layout resume: {two[5]} vs {two[3]}"
    for label, got in [
        ("bf16 (2,1,1)Z1 -> (1,2,1)Z3", two[6]),
        ("bf16 (2,1,1)Z1 -> (1,1,2)Z1", two[7]),
        ("bf16 (2,1,1)Z1 -> one process Z0", one[0]),
    ]:
        assert _diff(got, two[3][SAVE_AT:]) < BF16_TOL, f"{label}: {got} vs {two[3][SAVE_AT:]}"
