"""Rank order: Anvil's groups, megatron-core's and DeepSpeed's are the same ranks in the same groups."""

import pytest

from framework.configtree import ConfigError
from framework.parallel.topology import Layout, deepspeed_groups, layout_from_config, rank_groups


@pytest.mark.parametrize("layout", [Layout(2, 1, 2), Layout(2, 2, 2), Layout(4, 2, 1), Layout(1, 2, 4)])
def test_deepspeed_topology_matches_anvil_order(layout):
    ours = rank_groups(layout)
    theirs = deepspeed_groups(layout)
    for kind in ("data", "tensor", "pipeline"):
        assert theirs[kind] == sorted(ours[kind]), kind


def test_rank_order_at_2_1_2_and_2_2_2():
    # (dp, tp, pp) = (2, 1, 2): ranks 0,1 are stage 0 (data-parallel pair), 2,3 stage 1.
    g = rank_groups(Layout(2, 1, 2))
    assert g["data"] == [[0, 1], [2, 3]]
    assert g["pipeline"] == [[0, 2], [1, 3]]
    g = rank_groups(Layout(2, 2, 2))
    assert g["tensor"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert g["data"] == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert g["pipeline"] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert g["model"] == [[0, 1, 4, 5], [2, 3, 6, 7]]


def test_coords_roundtrip():
    lay = Layout(3, 2, 2)
    assert sorted(lay.rank(*lay.coords(r)) for r in range(lay.world_size)) == list(range(12))


def test_layout_errors_name_the_numbers():
    with pytest.raises(ConfigError, match="world size 6 is not divisible by tensor x pipeline = 2 x 2"):
        layout_from_config(6, 2, 2)
    assert layout_from_config(8, 2, 2) == Layout(2, 2, 2)


def test_validate_layout_refuses_with_reasons():
    from framework.config import ModelConfig, ParallelConfig, RunConfig, TrainConfig
    from framework.parallel.topology import validate_layout

    def cfg(**par):
        return RunConfig(
            model=ModelConfig(n_layers=2, d_model=32, n_heads=4, vocab_size=64, seq_len=16),
            parallel=ParallelConfig(**par),
            train=TrainConfig(micro_batch_size=1, global_batch_size=4),
        )

    assert validate_layout(cfg(tensor=2, pipeline=2), 8) == Layout(2, 2, 2)
    with pytest.raises(ConfigError, match="ZeRO-2 with pipeline parallelism is not supported by DeepSpeed"):
        validate_layout(cfg(pipeline=2, zero_stage=2), 4)
    with pytest.raises(ConfigError, match="at least one layer per stage"):
        validate_layout(cfg(pipeline=4), 4)
    with pytest.raises(ConfigError, match="n_heads=4 is not divisible by 8"):
        validate_layout(cfg(tensor=8), 8)
    gpt2 = cfg(tensor=2, sequence_parallel=True)
    gpt2.model.arch = "gpt2"
    with pytest.raises(ConfigError, match="sequence_parallel': needs model.arch=llama"):
        validate_layout(gpt2, 2)
