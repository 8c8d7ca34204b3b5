"""Rotary layouts: weights written for the interleaved convention (Meta's original Llama, GPT-J)
give the same attention scores in Anvil's / HF's rotate_half convention after
`permute_for_rotate_half`, and give different ones without it (the classic gibberish bug)."""

import torch

from framework.interop.hf_import import permute_for_rotate_half
from framework.model.transformer import apply_rotary, rotary_tables


def _interleaved(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Meta's reference: adjacent pairs (2i, 2i+1) as complex numbers times e^{i t w_i}."""
    T, d = x.shape[-2], x.shape[-1]
    freqs = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
    rot = torch.polar(torch.ones(T, d // 2), torch.outer(torch.arange(T).float(), freqs))
    z = torch.view_as_complex(x.float().reshape(*x.shape[:-1], d // 2, 2))
    return torch.view_as_real(z * rot).flatten(-2)


def _scores(wq, wk, x, heads, rotate):
    T, hd = x.size(0), wq.size(0) // heads
    q = (x @ wq.T).view(T, heads, hd).transpose(0, 1)
    k = (x @ wk.T).view(T, heads, hd).transpose(0, 1)
    return rotate(q) @ rotate(k).transpose(-1, -2)


def test_permute_for_rotate_half_preserves_attention_scores():
    torch.manual_seed(0)
    heads, hd, d, T = 2, 8, 16, 5
    wq, wk, x = torch.randn(heads * hd, d), torch.randn(heads * hd, d), torch.randn(T, d)
    cos, sin = rotary_tables(T, hd, 10000.0, "cpu")
    reference = _scores(wq, wk, x, heads, _interleaved)
    permuted = _scores(
        permute_for_rotate_half(wq, heads),
        permute_for_rotate_half(wk, heads),
        x,
        heads,
        lambda t: apply_rotary(t, cos, sin),
    )
    unpermuted = _scores(wq, wk, x, heads, lambda t: apply_rotary(t, cos, sin))
    torch.testing.assert_close(permuted, reference, atol=1e-4, rtol=1e-4)
    assert (unpermuted - reference).abs().max() > 1e-2
