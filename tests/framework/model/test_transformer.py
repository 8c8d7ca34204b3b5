"""The model: parameter counts in closed form, causality, shapes, init scale, presets on the meta device."""

import math

import pytest
import torch

from framework.config import ModelConfig, load_run_config
from framework.model.presets import PRESET_DIR, count_params, list_presets
from framework.model.transformer import Transformer, init_stds

SMALL = [
    ModelConfig(),
    ModelConfig(arch="gpt2", n_layers=3, d_model=48, n_heads=4, vocab_size=100, seq_len=32),
    ModelConfig(n_layers=2, d_model=64, n_heads=8, n_kv_heads=2, tie_embeddings=True, ffn_hidden=96),
    ModelConfig(arch="gpt2", tie_embeddings=True, vocab_size=128, seq_len=16),
]


@pytest.mark.parametrize("cfg", SMALL, ids=["llama", "gpt2", "llama-gqa-tied", "gpt2-tied"])
def test_param_count_matches_closed_form(cfg):
    torch.manual_seed(0)
    model = Transformer(cfg)
    size = count_params(cfg)
    assert model.num_params() == size.total
    assert model.num_params(non_embedding=True) == size.non_embedding
    logits = model(torch.randint(0, cfg.vocab_size, (2, cfg.seq_len)))
    assert logits.shape == (2, cfg.seq_len, cfg.vocab_size)


@pytest.mark.parametrize("name", ["1m", "10m", "125m", "1.3b", "13b", "70b"])
def test_presets_on_meta_device_match_closed_form(name):
    cfg = load_run_config(str(PRESET_DIR / f"{name}.yaml")).model
    with torch.device("meta"):
        model = Transformer(cfg)
    assert model.num_params() == count_params(cfg).total


def test_preset_sizes_are_what_their_names_say():
    expected = {
        "1m": 1e6,
        "10m": 1e7,
        "125m": 1.25e8,
        "350m": 3.5e8,
        "760m": 7.6e8,
        "1.3b": 1.3e9,
        "2.7b": 2.7e9,
        "6.7b": 6.7e9,
        "13b": 1.3e10,
        "30b": 3.0e10,
        "70b": 7.0e10,
    }
    assert set(expected) == set(list_presets())
    for name, target in expected.items():
        total = count_params(load_run_config(str(PRESET_DIR / f"{name}.yaml")).model).total
        assert 0.7 * target < total < 1.35 * target, (name, total)


def test_flops_per_token_is_six_n_plus_attention():
    cfg = ModelConfig(n_layers=4, d_model=128, n_heads=4, vocab_size=256, seq_len=64)
    size = count_params(cfg)
    matmul = size.non_embedding - (2 * cfg.n_layers + 1) * cfg.d_model + cfg.vocab_size * cfg.d_model
    assert size.flops_per_token == 6 * matmul + 12 * cfg.n_layers * cfg.seq_len * cfg.d_model


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_causal_future_tokens_do_not_change_the_past(arch):
    cfg = ModelConfig(arch=arch, seq_len=16, vocab_size=50)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    a = torch.randint(0, 50, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 1) % 50
    la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :10], lb[:, :10])
    assert not torch.allclose(la[:, 10:], lb[:, 10:])


def test_loss_from_head_output_and_activation_checkpointing_agree():
    cfg = ModelConfig()
    torch.manual_seed(0)
    plain = Transformer(cfg)
    torch.manual_seed(0)
    ckpt = Transformer(cfg, activation_checkpointing=True)
    x, y = torch.randint(0, cfg.vocab_size, (2, 32)), torch.randint(0, cfg.vocab_size, (2, 32))
    loss_a, loss_b = plain(x, y), ckpt(x, y)
    loss_a.backward()
    loss_b.backward()
    torch.testing.assert_close(loss_a, loss_b)
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    # an untrained model predicts roughly uniformly
    assert abs(loss_a.item() - math.log(cfg.vocab_size)) < 0.5


def test_neox_init_scales_residual_projections_by_depth():
    from framework.model.init import init_model

    cfg = ModelConfig(n_layers=8, d_model=256, n_heads=4, vocab_size=64)
    with torch.device("meta"):
        model = Transformer(cfg)
    model = init_model(model, seed=0)  # layout-free values: meta parameters materialised on the CPU
    assert not any(p.is_meta for p in model.parameters())
    std, out_std = init_stds(cfg)
    assert std == pytest.approx(math.sqrt(2 / (5 * 256))) and out_std == pytest.approx(2 / (8 * 16))
    assert model.blocks[0].attn.q_proj.weight.std().item() == pytest.approx(std, rel=0.05)
    assert model.blocks[0].attn.o_proj.weight.std().item() == pytest.approx(out_std, rel=0.05)
    assert model.blocks[0].mlp.down_proj.weight.std().item() == pytest.approx(out_std, rel=0.05)


def test_parameter_names_are_stable():
    names = set(Transformer(ModelConfig(n_layers=1)).state_dict())
    assert {
        "embed.tok.weight",
        "blocks.0.attn_norm.weight",
        "blocks.0.attn.q_proj.weight",
        "blocks.0.attn.k_proj.weight",
        "blocks.0.attn.v_proj.weight",
        "blocks.0.attn.o_proj.weight",
        "blocks.0.mlp_norm.weight",
        "blocks.0.mlp.gate_proj.weight",
        "blocks.0.mlp.up_proj.weight",
        "blocks.0.mlp.down_proj.weight",
        "norm.weight",
        "head.weight",
    } == names
    gpt2 = set(Transformer(ModelConfig(arch="gpt2", n_layers=1)).state_dict())
    assert {
        "embed.pos.weight",
        "blocks.0.mlp.fc_in.bias",
        "blocks.0.mlp.fc_out.weight",
        "blocks.0.attn.q_proj.bias",
        "norm.bias",
    } <= gpt2


def test_too_long_sequence_is_refused():
    with pytest.raises(ValueError, match="exceeds model.seq_len=8"):
        Transformer(ModelConfig(seq_len=8))(torch.zeros(1, 9, dtype=torch.long))


def test_anvil_model_info(capsys):
    from launch.cli import main

    assert main(["model", "info", "1.3b", "--instantiate"]) == 0
    out = capsys.readouterr().out
    assert "1,345,423,360" in out and "instantiated (meta)" in out
    with pytest.raises(SystemExit, match="no such file or preset"):
        main(["model", "info", "nonexistent"])
