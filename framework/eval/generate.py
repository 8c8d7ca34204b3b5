"""Sampling from a checkpoint: greedy (temperature 0), temperature, top-k and top-p (nucleus).

Reads the full weights (`store.load_weights`: assembled from the checkpoint's shards) and the
resolved config from the checkpoint, so it works for checkpoints saved under any layout, without
DeepSpeed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from framework.config import ModelConfig
from framework.configtree import build


def load_model(checkpoint: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    from framework.checkpoint.store import load_weights
    from framework.model.transformer import Transformer

    weights, meta = load_weights(checkpoint)
    cfg = build(ModelConfig, meta["config"]["model"], "model")
    with torch.device("meta"):
        model = Transformer(cfg)
    model = model.to_empty(device=device)
    if cfg.tie_embeddings:
        model.head.weight = model.embed.tok.weight
        weights = {**weights, "head.weight": weights["embed.tok.weight"]}
    model.load_state_dict(weights, strict=True)
    return model.eval(), meta


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Mask (to -inf) everything outside the top-k tokens and outside the smallest set whose
    probability reaches top_p; logits is (B, V)."""
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the probability mass before it already reaches top_p (keeps >= 1 token)
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokens: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    stop_id: int | None = None,
) -> list[int]:
    """Continue `tokens`; returns only the new tokens. The context is cropped to model.seq_len."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    seq = torch.tensor([tokens], dtype=torch.long, device=device)
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(seq[:, -model.cfg.seq_len :])[:, -1, :].float()
        if temperature <= 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=gen)
        token = int(nxt)
        if stop_id is not None and token == stop_id:
            break
        out.append(token)
        seq = torch.cat([seq, nxt], dim=1)
    return out
