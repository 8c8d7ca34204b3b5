"""Pipeline stages always hold a transformer block: a stage of only the embedding (large vocabulary)
has no 1-D parameter, one optimizer parameter group fewer than its peers, and ZeRO's per-group
gradient-norm all-reduces no longer pair up across stages (it hung at TP2 x PP4, 32k vocabulary)."""

import pytest

from framework.config import ModelConfig, RunConfig
from framework.parallel.parallelize import build_meta_model
from framework.parallel.pipeline import _is_block, partition, pipeline_layers


@pytest.mark.parametrize(
    "vocab,stages,method",
    [(512, 2, "parameters"), (32768, 2, "parameters"), (32768, 4, "type:Block"), (32768, 8, "type:Block")],
)
def test_every_stage_has_a_block(vocab, stages, method):
    model = build_meta_model(RunConfig(model=ModelConfig(n_layers=8, d_model=768, n_heads=12, vocab_size=vocab)))
    got, parts = partition(model, stages)
    assert got == method
    layers, _ = pipeline_layers(model)
    for s in range(stages):
        assert any(_is_block(layer) for layer in layers[parts[s] : parts[s + 1]]), (s, parts)
