"""Model sizes in closed form: parameter counts and training FLOPs per token, without building a model.

`configs/models/*.yaml` hold the presets (a `model:` section each, usable as `base:` of a training
config). `anvil model info CONFIG` prints these numbers; the scaling-law sweeps use them to size
runs, and MFU uses `flops_per_token`. Tests check them against instantiated models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from framework.config import ModelConfig

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "models"


@dataclass
class ModelSize:
    total: int  # unique parameters
    non_embedding: int  # without token/position embeddings and the output head
    embedding: int  # token (+ position) embeddings
    head: int  # output head (0 when tied)
    flops_per_token: float  # training (forward + backward) FLOPs per token at model.seq_len


def count_params(cfg: ModelConfig) -> ModelSize:
    from framework.model.transformer import ffn_hidden_size

    d, L, V = cfg.d_model, cfg.n_layers, cfg.vocab_size
    kv = (cfg.n_kv_heads or cfg.n_heads) * (d // cfg.n_heads)
    f = ffn_hidden_size(cfg)
    gpt2 = cfg.arch == "gpt2"
    attn = d * d + 2 * d * kv + d * d + ((d + 2 * kv + d) if gpt2 else 0)
    mlp = (2 * d * f + f + d) if gpt2 else 3 * d * f
    norm = 2 * d if gpt2 else d
    block = attn + mlp + 2 * norm
    embedding = V * d + (cfg.seq_len * d if gpt2 else 0)
    head = 0 if cfg.tie_embeddings else V * d
    non_embedding = L * block + norm
    total = embedding + head + non_embedding
    # 6 FLOPs per weight per token for matmuls (2 forward, 4 backward), the head's matmul always
    # counted; attention scores and values add 2 * 2 * T * d per layer forward (no causal discount).
    matmul_params = L * (d * d + 2 * d * kv + d * d + (2 if gpt2 else 3) * d * f) + V * d
    flops = 6 * matmul_params + 12 * L * cfg.seq_len * d
    return ModelSize(total, non_embedding, embedding, head, float(flops))


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def human(n: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"
