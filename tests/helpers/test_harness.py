"""The multi-rank harness itself: results in rank order, failures and hangs named by rank."""

import time

import pytest
import torch
import torch.distributed as dist

from tests.helpers.dist import DistributedTestError, run_distributed


def _allreduce_rank():
    t = torch.tensor([float(dist.get_rank())])
    dist.all_reduce(t)
    return dist.get_rank(), dist.get_world_size(), t.item()


def _rank1_raises():
    if dist.get_rank() == 1:
        raise ValueError("boom on purpose")
    dist.barrier()


def _rank1_hangs():
    if dist.get_rank() == 1:
        dist.barrier()  # nobody else joins: a hung collective
    return "done"


@pytest.mark.parametrize("world_size", [2, 4, 8])
def test_allreduce_on_n_ranks(world_size):
    results = run_distributed(_allreduce_rank, world_size, timeout=90)
    expected = sum(range(world_size))
    assert results == [(r, world_size, expected) for r in range(world_size)]


def test_failing_rank_reports_its_traceback():
    with pytest.raises(DistributedTestError, match=r"rank 1 of 2 failed: ValueError: boom on purpose"):
        run_distributed(_rank1_raises, 2, timeout=60)


def test_hung_rank_is_named_within_timeout():
    start = time.monotonic()
    with pytest.raises(DistributedTestError) as info:
        run_distributed(_rank1_hangs, 2, timeout=15)
    elapsed = time.monotonic() - start
    assert "rank(s) [1] of 2 hung" in str(info.value)
    assert "_rank1_hangs" in str(info.value)  # the stack dump shows where rank 1 was stuck
    assert elapsed < 15 + 10
