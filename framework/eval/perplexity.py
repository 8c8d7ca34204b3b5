"""Loss and perplexity of a language model: held-out token shards (`anvil eval`) and single
documents (the `perplexity` curation step).

A `Scorer` wraps either an Anvil checkpoint (its consolidated weights, so any training layout
works) or a transformers folder (e.g. from `anvil export hf`), plus its tokenizer. Two uses:

- `evaluate_prefix`: the token stream of a Megatron `PREFIX.bin/.idx` is cut into non-overlapping
  windows of seq_len + 1 tokens; loss is the token-mean next-token NLL over every window (split
  across ranks under torchrun, reduced as sums, so the result does not depend on the world size),
  perplexity = exp(loss).
- `score_texts`: per-document mean NLL in batches; long documents are scored on their first
  `max_tokens` tokens, in windows of the model's context.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Scorer:
    model: torch.nn.Module
    seq_len: int
    vocab_size: int
    tokenizer: object | None  # a `tokenizers.Tokenizer`
    eos_id: int | None
    source: str
    step: int | None = None
    hf: bool = False

    device: torch.device | None = None  # inputs are moved here; logits come back on the CPU

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.device is not None:
            x = x.to(self.device)
        out = self.model(input_ids=x).logits if self.hf else self.model(x)
        return out.float().cpu()

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError(f"{self.source}: no tokenizer found; cannot score text")
        return self.tokenizer.encode(text, add_special_tokens=False).ids


def _load_tokenizer(path: Path | None):
    if path is None or not Path(path).is_file():
        return None, None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.encode_special_tokens = True  # a document quoting "<|endoftext|>" is text, not a boundary
    eos = next((tok.token_to_id(t) for t in ("<|endoftext|>", "</s>", "<eos>") if tok.token_to_id(t) is not None), None)
    return tok, eos


def load_scorer(path: str | os.PathLike, device: str | torch.device = "cpu") -> Scorer:
    """An Anvil run/checkpoint folder, or a transformers folder (has config.json, no anvil.json)."""
    p = Path(path)
    if (p / "config.json").is_file() and not (p / "anvil.json").is_file():
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = AutoConfig.from_pretrained(str(p))
        model = AutoModelForCausalLM.from_pretrained(str(p), dtype=torch.float32).to(device).eval()
        tok, eos = _load_tokenizer(p / "tokenizer.json")
        seq = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions")
        return Scorer(model, seq, cfg.vocab_size, tok, eos, str(p), hf=True)
    from framework.checkpoint.store import load_weights, resolve
    from framework.interop.hf_export import find_tokenizer, model_config_from_meta
    from framework.model.transformer import Transformer

    ckpt = resolve(p)
    sd, meta = load_weights(ckpt)
    cfg = model_config_from_meta(meta)
    model = Transformer(cfg)
    model.load_state_dict(sd, strict=not cfg.tie_embeddings)
    tok, eos = _load_tokenizer(find_tokenizer(meta, ckpt, None))
    return Scorer(model.to(device).eval(), cfg.seq_len, cfg.vocab_size, tok, eos, str(ckpt), step=meta.get("step"))


def _token_stream(prefix: str, max_tokens: int | None) -> np.ndarray:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    for suffix in (".bin", ".idx"):
        if not Path(prefix + suffix).is_file():
            raise FileNotFoundError(f"{prefix}{suffix}: missing (expected a tokenized PREFIX.bin / PREFIX.idx)")
    ds = IndexedDataset(prefix)
    parts, total = [], 0
    for i in range(len(ds)):
        parts.append(np.asarray(ds[i], dtype=np.int64))
        total += len(parts[-1])
        if max_tokens and total >= max_tokens:
            break
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return stream[:max_tokens] if max_tokens else stream


@torch.no_grad()
def evaluate_prefix(
    scorer: Scorer,
    prefixes: list[str],
    seq_len: int | None = None,
    batch_size: int = 8,
    max_tokens: int | None = None,
    rank: int = 0,
    world: int = 1,
    lockstep: bool = False,
) -> dict:
    """Token-mean loss / perplexity over held-out shards; windows are split round-robin over ranks.
    `lockstep`: every rank runs the same number of forward passes (ZeRO-3 gathers parameters in
    each), padding with a dummy batch where it has fewer windows."""
    T = min(seq_len or scorer.seq_len, scorer.seq_len)
    nll_sum = torch.zeros((), dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    windows_total = 0
    for prefix in prefixes:
        stream = _token_stream(prefix, max_tokens)
        if len(stream) and int(stream.max()) >= scorer.vocab_size:
            raise ValueError(
                f"{prefix}: token id {int(stream.max())} >= model vocab_size {scorer.vocab_size} "
                "(tokenized with another tokenizer?)"
            )
        n = (len(stream) - 1) // T
        windows_total += n
        mine = list(range(rank, n, world))
        if lockstep:
            most = -(-(-(-n // world)) // batch_size)  # batches of the rank with the most windows
            for _ in range(most - -(-len(mine) // batch_size)):
                scorer.logits(torch.from_numpy(stream[:T].reshape(1, -1)))
        for i in range(0, len(mine), batch_size):
            idx = mine[i : i + batch_size]
            chunk = torch.from_numpy(np.stack([stream[j * T : j * T + T + 1] for j in idx]))
            logits = scorer.logits(chunk[:, :-1])
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), chunk[:, 1:].reshape(-1), reduction="sum")
            nll_sum += nll.double()
            count += chunk[:, 1:].numel()
    if world > 1:
        import torch.distributed as dist

        totals = torch.stack([nll_sum, count])
        dist.all_reduce(totals)
        nll_sum, count = totals[0], totals[1]
    if count == 0:
        raise ValueError(f"{prefixes}: fewer than seq_len + 1 = {T + 1} tokens; nothing to evaluate")
    loss = float(nll_sum / count)
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": int(count), "windows": windows_total, "seq_len": T}


def evaluate_domains(
    scorer: Scorer,
    domains: dict[str, str],
    seq_len: int | None = None,
    batch_size: int = 8,
    max_tokens: int | None = None,
    rank: int = 0,
    world: int = 1,
    lockstep: bool = False,
) -> dict:
    """Loss per domain (one held-out prefix each, Paloma-style) and the token-weighted total."""
    per = {
        name: evaluate_prefix(scorer, [prefix], seq_len, batch_size, max_tokens, rank, world, lockstep)
        for name, prefix in domains.items()
    }
    tokens = sum(r["tokens"] for r in per.values())
    loss = sum(r["loss"] * r["tokens"] for r in per.values()) / tokens
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "tokens": tokens,
        "windows": sum(r["windows"] for r in per.values()),
        "seq_len": next(iter(per.values()))["seq_len"],
        "domains": per,
    }


@torch.no_grad()
def score_texts(scorer: Scorer, texts: list[str], batch_size: int = 8, max_tokens: int = 512) -> list[dict]:
    """Per-document {"loss", "perplexity", "tokens"}; documents are batched by window, padded and
    masked. A document with fewer than 2 tokens gets loss NaN (too short to score)."""
    T = scorer.seq_len
    windows: list[tuple[int, list[int]]] = []  # (doc index, tokens of one window incl. its first target)
    for d, text in enumerate(texts):
        ids = ([scorer.eos_id] if scorer.eos_id is not None else []) + scorer.encode(text)[:max_tokens]
        for start in range(0, max(len(ids) - 1, 0), T):
            windows.append((d, ids[start : start + T + 1]))
    sums = [0.0] * len(texts)
    counts = [0] * len(texts)
    windows.sort(key=lambda w: len(w[1]))  # similar lengths together: less padding
    for i in range(0, len(windows), batch_size):
        group = windows[i : i + batch_size]
        L = max(len(w) for _, w in group)
        x = torch.zeros((len(group), L), dtype=torch.long)
        mask = torch.zeros((len(group), L - 1), dtype=torch.bool)
        for r, (_, w) in enumerate(group):
            x[r, : len(w)] = torch.tensor(w)
            mask[r, : len(w) - 1] = True
        logits = scorer.logits(x[:, :-1])
        nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        for r, (d, _) in enumerate(group):
            sums[d] += float(nll[r][mask[r]].double().sum())
            counts[d] += int(mask[r].sum())
    out = []
    for s, c in zip(sums, counts):
        loss = s / c if c else float("nan")
        out.append({"loss": loss, "perplexity": math.exp(loss) if c else float("nan"), "tokens": c})
    return out
