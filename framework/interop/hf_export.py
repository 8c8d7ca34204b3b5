"""Anvil checkpoint -> Hugging Face transformers folder, proven by logits parity.

Conversions break silently (gibberish after GPT-NeoX -> HF, torchtitan DCP -> HF), so every
convention is explicit here and `verify_export` compares logits and greedy generations:

- Layout: exports read the full weights through `store.load_weights`, which assembles every
  tensor from the checkpoint's shards (or an earlier version's `model.safetensors`), whatever the
  tensor / pipeline / ZeRO layout of the run, so any layout exports the same way.
- Rotary: Anvil rotates half-split pairs (dims i and i + head_dim/2), the `rotate_half` convention
  of HF Llama, so q/k need no permutation. (Meta's original Llama and GPT-NeoX-interleaved
  weights use adjacent pairs and would need `permute_for_rotate_half`; see hf_import.)
- Tied embeddings: `tie_word_embeddings` mirrors `model.tie_embeddings`; `lm_head.weight` is then
  not stored (Anvil's consolidated file omits `head.weight` too).
- Vocabulary padding: the model's (possibly padded) `vocab_size` is kept, so logits agree row
  for row; the tokenizer may be smaller (its ids are a prefix), as with GPT-NeoX and Llama 3.
- Norm epsilon: written as `rms_norm_eps` (llama) / `layer_norm_epsilon` (gpt2) from `model.norm_eps`.
- GPT-2 variant: `GPT2LMHeadModel` uses Conv1D ((in, out) weights) and one fused `c_attn`, so
  q/k/v are concatenated and every projection transposed; GELU is the tanh form (`gelu_new`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from framework.config import ModelConfig
from framework.configtree import ConfigError, build

DEFAULT_SHARD_SIZE = "2GB"


class ExportError(ValueError):
    """A checkpoint or folder that cannot be converted; the message names the tensor or key."""


def model_config_from_meta(meta: dict) -> ModelConfig:
    try:
        return build(ModelConfig, meta["config"]["model"], "model")
    except KeyError:
        raise ExportError("anvil.json: no 'config.model' section (not an Anvil training checkpoint?)") from None
    except ConfigError as exc:
        raise ExportError(f"anvil.json: {exc}") from None


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the consolidated Anvil state dict, from the model built on `meta`."""
    from framework.model.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        shapes.pop("head.weight", None)
    return shapes


def check_state_dict(sd: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], where: str) -> None:
    missing = [k for k in shapes if k not in sd]
    if missing:
        raise ExportError(
            f"{where}: missing tensor '{missing[0]}'" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    for name, shape in shapes.items():
        if tuple(sd[name].shape) != shape:
            raise ExportError(f"{where}: tensor '{name}' has shape {tuple(sd[name].shape)}, expected {shape}")
    extra = [k for k in sd if k not in shapes and not (k == "head.weight")]
    if extra:
        raise ExportError(f"{where}: unexpected tensor '{extra[0]}' for this model config")


def ffn_size(cfg: ModelConfig) -> int:
    from framework.model.transformer import ffn_hidden_size

    return ffn_hidden_size(cfg)


def hf_config(cfg: ModelConfig, eos_id: int | None, bos_id: int | None):
    from transformers import GPT2Config, LlamaConfig

    if cfg.arch == "llama":
        return LlamaConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.d_model,
            intermediate_size=ffn_size(cfg),
            num_hidden_layers=cfg.n_layers,
            num_attention_heads=cfg.n_heads,
            num_key_value_heads=cfg.n_kv_heads or cfg.n_heads,
            head_dim=cfg.d_model // cfg.n_heads,
            hidden_act="silu",
            max_position_embeddings=cfg.seq_len,
            rms_norm_eps=cfg.norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
            tie_word_embeddings=cfg.tie_embeddings,
            attention_bias=False,
            mlp_bias=False,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
            dtype="float32",
            architectures=["LlamaForCausalLM"],
        )
    if (cfg.n_kv_heads or cfg.n_heads) != cfg.n_heads:
        raise ExportError(
            "model.n_kv_heads: GPT-2 has no grouped-query attention; cannot export "
            f"n_kv_heads={cfg.n_kv_heads} != n_heads={cfg.n_heads}"
        )
    return GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.seq_len,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=ffn_size(cfg),
        activation_function="gelu_new",
        layer_norm_epsilon=cfg.norm_eps,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        dtype="float32",
        architectures=["GPT2LMHeadModel"],
    )


LLAMA_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    **{f"attn.{p}.weight": f"self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj")},
    **{f"mlp.{p}.weight": f"mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")},
}


def to_hf_llama(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out = {"model.embed_tokens.weight": sd["embed.tok.weight"], "model.norm.weight": sd["norm.weight"]}
    for i in range(cfg.n_layers):
        for ours, theirs in LLAMA_BLOCK.items():
            out[f"model.layers.{i}.{theirs}"] = sd[f"blocks.{i}.{ours}"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["head.weight"]
    return out


def to_hf_gpt2(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out = {
        "transformer.wte.weight": sd["embed.tok.weight"],
        "transformer.wpe.weight": sd["embed.pos.weight"],
        "transformer.ln_f.weight": sd["norm.weight"],
        "transformer.ln_f.bias": sd["norm.bias"],
    }
    for i in range(cfg.n_layers):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            out[h + f"{theirs}.weight"], out[h + f"{theirs}.bias"] = sd[b + f"{ours}.weight"], sd[b + f"{ours}.bias"]
        # Conv1D stores (in, out): transpose, and fuse q, k, v along the output dimension.
        out[h + "attn.c_attn.weight"] = torch.cat(
            [sd[b + f"attn.{p}.weight"] for p in ("q_proj", "k_proj", "v_proj")]
        ).t()
        out[h + "attn.c_attn.bias"] = torch.cat([sd[b + f"attn.{p}.bias"] for p in ("q_proj", "k_proj", "v_proj")])
        for ours, theirs in (("attn.o_proj", "attn.c_proj"), ("mlp.fc_in", "mlp.c_fc"), ("mlp.fc_out", "mlp.c_proj")):
            out[h + f"{theirs}.weight"] = sd[b + f"{ours}.weight"].t()
            out[h + f"{theirs}.bias"] = sd[b + f"{ours}.bias"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["head.weight"]
    return out


def find_tokenizer(meta: dict, ckpt: Path, override: str | None) -> Path | None:
    """The tokenizer.json the run trained with: explicit override, checkpoint copy, metadata, config."""
    candidates = [
        override,
        ckpt / "tokenizer.json",
        meta.get("tokenizer"),
        meta.get("config", {}).get("data", {}).get("tokenizer"),
    ]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    if override:
        raise ExportError(f"--tokenizer {override}: no such file")
    return None


def save_tokenizer(tokenizer_json: Path, out: Path, model_vocab: int, max_len: int) -> tuple[int | None, int | None]:
    """Write tokenizer files AutoTokenizer loads offline; return (eos_id, bos_id)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_file(str(tokenizer_json))
    if raw.get_vocab_size(with_added_tokens=True) > model_vocab:
        raise ExportError(
            f"{tokenizer_json}: {raw.get_vocab_size(with_added_tokens=True)} tokens but "
            f"model.vocab_size={model_vocab}; not the tokenizer this model was trained with"
        )
    specials = {t.content for t in raw.get_added_tokens_decoder().values() if t.special}
    eos = next((t for t in ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>") if t in specials), None)
    pad = next((t for t in ("<|pad|>", "<pad>") if t in specials), None)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token=eos,
        bos_token=eos,
        pad_token=pad,
        model_max_length=max_len,
        clean_up_tokenization_spaces=False,
    )
    tok.save_pretrained(str(out))
    return tok.eos_token_id, tok.bos_token_id


def export_hf(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    tokenizer: str | None = None,
    max_shard_size: str = DEFAULT_SHARD_SIZE,
    dtype: str = "float32",
) -> dict:
    """Convert one Anvil checkpoint (or a run folder's latest) into a transformers folder."""
    from transformers import GenerationConfig, GPT2LMHeadModel, LlamaForCausalLM

    from framework.checkpoint.store import load_weights, resolve

    ckpt = resolve(checkpoint)
    sd, meta = load_weights(ckpt)
    cfg = model_config_from_meta(meta)
    check_state_dict(sd, expected_shapes(cfg), str(ckpt))
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        if not (out / "config.json").is_file():
            raise ExportError(f"{out}: exists, is not empty and is not an earlier export; refusing to overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    tok_path = find_tokenizer(meta, ckpt, tokenizer)
    eos_id = bos_id = None
    if tok_path is not None:
        eos_id, bos_id = save_tokenizer(tok_path, out, cfg.vocab_size, cfg.seq_len)
    config = hf_config(cfg, eos_id, bos_id)
    cls = LlamaForCausalLM if cfg.arch == "llama" else GPT2LMHeadModel
    hf_sd = (to_hf_llama if cfg.arch == "llama" else to_hf_gpt2)(sd, cfg)
    if cfg.tie_embeddings:  # the module's state_dict lists the shared tensor under both names
        hf_sd["lm_head.weight"] = hf_sd[
            "model.embed_tokens.weight" if cfg.arch == "llama" else "transformer.wte.weight"
        ]
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    with torch.device("meta"):
        model = cls(config)
    # strict=True: every HF parameter must be produced by the mapping, nothing may be left over.
    model.load_state_dict({k: v.to(torch_dtype).contiguous() for k, v in hf_sd.items()}, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.tie_weights()
    _materialise_buffers(model)
    model.config.dtype = dtype
    model.save_pretrained(str(out), max_shard_size=max_shard_size, safe_serialization=True)
    GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id).save_pretrained(str(out))
    info = {
        "checkpoint": str(ckpt),
        "step": meta.get("step"),
        "arch": cfg.arch,
        "class": cls.__name__,
        "vocab_size": cfg.vocab_size,
        "tokenizer": str(tok_path) if tok_path else None,
        "dtype": dtype,
        "files": sorted(p.name for p in out.iterdir()),
    }
    (out / "anvil_export.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _materialise_buffers(model) -> None:
    """Non-persistent buffers (rotary inv_freq, GPT-2's causal mask) stay on `meta` after
    `load_state_dict(assign=True)`; they are recomputed at load, so any CPU stand-in will do."""
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.device.type == "meta":
                module._buffers[name] = torch.zeros(buf.shape, dtype=buf.dtype)
