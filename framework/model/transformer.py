"""The one model: a decoder-only transformer that reads like nanoGPT and knows nothing of parallelism.

Llama-style by default (RMSNorm, rotary positions, SwiGLU, no biases), GPT-2 style with
`model.arch=gpt2` (LayerNorm, GELU, learned positions, biases). The model is a chain of separate
modules, `embed -> blocks[0..L-1] -> norm -> head`, and the loss is computed from the head's
logits by `layers.cross_entropy`, so a pipeline can cut it at any block boundary. Linears,
embeddings and the loss come from `layers.py` as plain torch modules; `framework/parallel` swaps
them for tensor-parallel ones and cuts pipeline stages afterwards. The constructor allocates
nothing when called under `torch.device("meta")`; `framework.model.init` gives the initial values.

Parameter names are part of Anvil's checkpoint format (the HF exporter maps them):
  embed.tok.weight, embed.pos.weight (gpt2),
  blocks.{i}.attn_norm.*, blocks.{i}.attn.{q_proj,k_proj,v_proj,o_proj}.*,
  blocks.{i}.mlp_norm.*, blocks.{i}.mlp.{gate_proj,up_proj,down_proj}.* (llama) | {fc_in,fc_out}.* (gpt2),
  norm.*, head.weight (absent from consolidated files when tied to embed.tok.weight).
  The loss (`loss`) has no parameters.

Initialisation follows GPT-NeoX / OLMo: "small init" std = sqrt(2 / (5 d)) (or `model.init_std`)
for every matrix, and the residual output projections (o_proj, down_proj / fc_out) scaled by depth:
std = 2 / (n_layers sqrt(d)) ("wang init"; with `model.init_std`: init_std / sqrt(2 n_layers)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from framework.config import ModelConfig
from framework.model import layers


def ffn_hidden_size(cfg: ModelConfig) -> int:
    if cfg.ffn_hidden:
        return cfg.ffn_hidden
    if cfg.arch == "gpt2":
        return 4 * cfg.d_model
    return 64 * math.ceil(8 * cfg.d_model / 3 / 64)  # SwiGLU keeps the 4d MLP's parameter count


def init_stds(cfg: ModelConfig) -> tuple[float, float]:
    """(std for every matrix, std for residual output projections)."""
    if cfg.init_std:
        return cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.n_layers)
    return math.sqrt(2 / (5 * cfg.d_model)), 2 / (cfg.n_layers * math.sqrt(cfg.d_model))


def rotary_tables(seq_len: int, head_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (seq_len, head_dim) in fp32, half-split layout (as HF Llama)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class Embedding(nn.Module):
    def __init__(self, cfg: ModelConfig, std: float):
        super().__init__()
        self.tok = layers.vocab_embedding(cfg.vocab_size, cfg.d_model, std)
        self.pos = layers.position_embedding(cfg.seq_len, cfg.d_model, std) if cfg.arch == "gpt2" else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok(tokens)
        if self.pos is not None:
            h = h + self.pos(torch.arange(tokens.size(1), device=tokens.device))
        return h


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, std: float, out_std: float):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads or cfg.n_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.rotary = cfg.arch == "llama"
        self.rope_theta = cfg.rope_theta
        bias = cfg.arch == "gpt2"
        kv_dim = self.n_kv_heads * self.head_dim
        self.q_proj = layers.column_linear(cfg.d_model, cfg.d_model, bias, std)
        self.k_proj = layers.column_linear(cfg.d_model, kv_dim, bias, std)
        self.v_proj = layers.column_linear(cfg.d_model, kv_dim, bias, std)
        self.o_proj = layers.row_linear(cfg.d_model, cfg.d_model, bias, out_std)
        self._rope: tuple | None = None  # cached (T, device, cos, sin); not a buffer, so never cast to bf16

    def rope(self, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._rope is None or self._rope[0] < seq_len or self._rope[1] != device:
            self._rope = (seq_len, device, *rotary_tables(seq_len, self.head_dim, self.rope_theta, device))
        return self._rope[2][:seq_len], self._rope[3][:seq_len]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Local head counts come from the projections' output size, so a tensor-parallel shard works;
        # B, T come from them too, since with sequence parallelism x holds only a slice of the sequence.
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        B, T = q.shape[:2]
        q = q.view(B, T, -1, self.head_dim).transpose(1, 2)
        k = k.view(B, T, -1, self.head_dim).transpose(1, 2)
        v = v.view(B, T, -1, self.head_dim).transpose(1, 2)
        if self.rotary:
            cos, sin = self.rope(T, x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.size(1) != k.size(1))
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, std: float, out_std: float):
        super().__init__()
        hidden = ffn_hidden_size(cfg)
        self.swiglu = cfg.arch == "llama"
        if self.swiglu:
            self.gate_proj = layers.column_linear(cfg.d_model, hidden, False, std)
            self.up_proj = layers.column_linear(cfg.d_model, hidden, False, std)
            self.down_proj = layers.row_linear(hidden, cfg.d_model, False, out_std)
        else:
            self.fc_in = layers.column_linear(cfg.d_model, hidden, True, std)
            self.fc_out = layers.row_linear(hidden, cfg.d_model, True, out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.fc_out(F.gelu(self.fc_in(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, std: float, out_std: float):
        super().__init__()
        kind = "rmsnorm" if cfg.arch == "llama" else "layernorm"
        self.attn_norm = layers.norm(kind, cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg, std, out_std)
        self.mlp_norm = layers.norm(kind, cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg, std, out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, activation_checkpointing: bool = False):
        super().__init__()
        self.cfg = cfg
        self.activation_checkpointing = activation_checkpointing
        std, out_std = init_stds(cfg)
        self.embed = Embedding(cfg, std)
        self.blocks = nn.ModuleList(Block(cfg, std, out_std) for _ in range(cfg.n_layers))
        self.norm = layers.norm("rmsnorm" if cfg.arch == "llama" else "layernorm", cfg.d_model, cfg.norm_eps)
        self.head = layers.lm_head(cfg.d_model, cfg.vocab_size, std)
        self.loss = layers.CrossEntropy()
        if cfg.tie_embeddings:
            self.head.weight = self.embed.tok.weight

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V), or the mean loss when `targets` is given."""
        if tokens.size(1) > self.cfg.seq_len:
            raise ValueError(f"sequence of {tokens.size(1)} tokens exceeds model.seq_len={self.cfg.seq_len}")
        h = self.embed(tokens)
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                h = checkpoint(block, h, use_reentrant=False)
            else:
                h = block(h)
        logits = self.head(self.norm(h))
        return logits if targets is None else self.loss(logits, targets)

    def num_params(self, non_embedding: bool = False) -> int:
        """Unique parameters; `non_embedding` leaves out token/position embeddings and the head."""
        seen = {id(p): p for p in self.parameters()}
        total = sum(p.numel() for p in seen.values())
        if non_embedding:
            total -= self.embed.tok.weight.numel()
            if self.embed.pos is not None:
                total -= self.embed.pos.weight.numel()
            if not self.cfg.tie_embeddings:
                total -= self.head.weight.numel()
        return total
