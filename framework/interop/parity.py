"""Numerical proof of an export: the transformers model must compute what the Anvil model does.

`compare(checkpoint, hf_dir)` loads both sides in fp32, feeds the same random token batches and
returns the largest absolute logits difference, then runs greedy generation from random prompts on
both and reports whether every generated token agrees. `anvil export hf --verify` and the tests
call it; a conversion bug (rotary layout, a transposed Conv1D, a wrong epsilon) shows up as a
difference far above 1e-4.
"""

from __future__ import annotations

import torch


def load_anvil_model(checkpoint) -> torch.nn.Module:
    from framework.checkpoint.store import load_weights
    from framework.interop.hf_export import model_config_from_meta
    from framework.model.transformer import Transformer

    sd, meta = load_weights(checkpoint)
    cfg = model_config_from_meta(meta)
    model = Transformer(cfg)
    model.load_state_dict(sd, strict=not cfg.tie_embeddings)
    return model.float().eval()


@torch.no_grad()
def anvil_greedy(model, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    seq = prompt
    for _ in range(new_tokens):
        nxt = model(seq[:, -model.cfg.seq_len :])[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    return seq[:, prompt.size(1) :]


@torch.no_grad()
def compare(
    checkpoint,
    hf_dir,
    batches: int = 2,
    batch_size: int = 2,
    seq_len: int | None = None,
    new_tokens: int = 8,
    seed: int = 0,
) -> dict:
    from transformers import AutoModelForCausalLM

    ours = load_anvil_model(checkpoint)
    theirs = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    cfg = ours.cfg
    T = seq_len or cfg.seq_len
    gen = torch.Generator().manual_seed(seed)
    max_diff = 0.0
    for _ in range(batches):
        x = torch.randint(0, cfg.vocab_size, (batch_size, T), generator=gen)
        a, b = ours(x).float(), theirs(input_ids=x).logits.float()
        max_diff = max(max_diff, (a - b).abs().max().item())
    prompt = torch.randint(0, cfg.vocab_size, (batch_size, min(8, cfg.seq_len - new_tokens)), generator=gen)
    mine = anvil_greedy(ours, prompt, new_tokens)
    hf = theirs.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
    )[:, prompt.size(1) :]
    return {
        "max_abs_logit_diff": max_diff,
        "greedy_equal": bool(torch.equal(mine, hf)),
        "greedy_anvil": mine.tolist(),
        "greedy_hf": hf.tolist(),
    }
