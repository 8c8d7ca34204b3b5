"""Universal checkpoints: save under one DP x TP x PP x ZeRO layout, resume under another; the next
three losses equal an uninterrupted single-process run's within 1e-5 (weights, Adam moments and
step restored). Directions from the issue: (2,2,1) ZeRO-1 -> (1,1,2) and -> one process;
one process -> (2,1,1) ZeRO-3."""
import pytest
import torch

from framework.configtree import to_dict
from tests.framework.parallel.test_parity import GLOBAL_BATCH, LR, make_cfg, reference_losses
from tests.helpers.dist import run_distributed

SAVE_AT, MORE = 5, 3


def _batches(cfg):
    g = torch.Generator().manual_seed(123)
    return [torch.randint(0, cfg.model.vocab_size, (GLOBAL_BATCH, cfg.model.seq_len + 1), generator=g)
            for _ in range(SAVE_AT + MORE)]


def _reference() -> list[float]:
    cfg = make_cfg()
    return reference_losses(cfg, _batches(cfg))


def _session(jobs: list[dict]) -> list[list[float]]:
    """Each job: build the layout, optionally load `load_from`, train steps [start, stop), optionally save."""
    import deepspeed
    import torch.distributed as dist

    from framework.checkpoint import store
    from framework.distributed import init_distributed
    from framework.parallel import topology
    from framework.training.engine import Engine
    from framework.training.trainer import build_model

    _, world, device = init_distributed()
    from framework.distributed import disable_deepspeed_cpu_builds

    disable_deepspeed_cpu_builds()  # the group already exists: keep DeepSpeed from building its shm op
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
        for step, batch in enumerate(_batches(cfg)[start:job["stop"]], start=start):
            per = GLOBAL_BATCH // dp
            mine = batch[topo.dp_rank * per:(topo.dp_rank + 1) * per]
            loss = engine.train_step([(s[:, :-1], s[:, 1:]) for s in mine.split(1)], LR).loss.reshape(1).clone()
            dist.all_reduce(loss)
            losses.append(loss.item() / world)
        if job.get("save_to"):
            meta = {"step": job["stop"], "consumed_samples": job["stop"] * GLOBAL_BATCH, "tokens": 0, "dp_size": dp,
                    "world_size": world, "zero_stage": cfg.parallel.zero_stage, "config": to_dict(cfg)}
            store.save(job["save_to"], job["stop"], engine, meta, 1, "")
        results.append(losses)
        del engine
        topology.destroy()
        dist.barrier()
    return results


@pytest.mark.slow
def test_resume_under_other_layouts(tmp_path):
    ref = _reference()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    # Save at (2,2,1) ZeRO-1.
    saved = run_distributed(_session, 4, [dict(layout=dict(tensor=2, zero=1), stop=SAVE_AT, save_to=a)], timeout=240)
    assert max(abs(x - y) for x, y in zip(saved[0][0], ref[:SAVE_AT])) < 1e-5
    # One process: resume from (2,2,1) ZeRO-1; and save its own checkpoint at step 5.
    one = run_distributed(_session, 1, [dict(layout={}, stop=SAVE_AT + MORE, load_from=a),
                                        dict(layout={}, stop=SAVE_AT, save_to=b)], timeout=240)[0]
    # Two ranks: (1,1,2) ZeRO-1 from the (2,2,1) checkpoint; (2,1,1) ZeRO-3 from the single-process one.
    two = run_distributed(_session, 2, [dict(layout=dict(pipeline=2, zero=1), stop=SAVE_AT + MORE, load_from=a),
                                        dict(layout=dict(zero=3), stop=SAVE_AT + MORE, load_from=b)], timeout=240)[0]
    want = ref[SAVE_AT:]
    for label, got in [("(2,2,1)Z1 -> 1 process", one[0]), ("(2,2,1)Z1 -> (1,1,2)Z1", two[0]),
                       ("1 process -> (2,1,1)Z3", two[1])]:
        assert len(got) == MORE
        diff = max(abs(x - y) for x, y in zip(got, want))
        assert diff < 1e-5, f"{label}: {got} vs uninterrupted {want} (max diff {diff:.2e})"
