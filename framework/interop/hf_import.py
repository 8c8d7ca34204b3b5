"""Hugging Face transformers folder (Llama or GPT-2) -> an Anvil run that `anvil train` continues.

`anvil import hf --model DIR --output RUN_DIR [key=value ...]` reads a local folder (config.json,
`model.safetensors` or sharded `model-*.safetensors` + index, or `pytorch_model.bin` read with
`weights_only=True`), checks every tensor name and shape against the architecture the config
describes, maps the names onto Anvil's model and writes RUN_DIR as if `anvil train` had saved step 0:
`RUN_DIR/config.yaml` (resolved; `model.*` from config.json, `data.tokenizer` = the folder's
tokenizer copied to RUN_DIR/tokenizer.json) and `RUN_DIR/checkpoints/step_00000000/`: one shard of
the full fp32 weights (kind "fp32", no Adam moments, `adam_step` 0), written in this one process
without an engine or a process group. `anvil train RUN_DIR/config.yaml data.paths=...` then resumes
from it under any layout (each rank reads its slices; Adam moments start at zero), so the import
does not need to run at the training layout.

Conventions are the exporter's, inverted (see hf_export): HF Llama's rotate_half rotary layout is
Anvil's, so q/k are copied as they are; a config that needs something Anvil's model does not do
(rope scaling, biases in Llama, a head_dim other than hidden/heads) fails naming the config key.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from framework.config import ModelConfig, RunConfig
from framework.configtree import build, merge, parse_overrides, to_dict
from framework.interop.hf_export import (
    LLAMA_BLOCK,
    ExportError,
    check_state_dict,
    expected_shapes,
    to_hf_gpt2,
    to_hf_llama,
)


def read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ExportError(f"{path}: missing (not a transformers model folder)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from None


def _need(hf: dict, key: str, where: str):
    if key not in hf:
        raise ExportError(f"{where}: missing key '{key}'")
    return hf[key]


def model_config_from_hf(hf: dict, where: str = "config.json") -> ModelConfig:
    """Anvil's ModelConfig for a transformers config dict; unsupported features name their key."""
    mtype = hf.get("model_type")
    if mtype == "llama":
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ExportError(
                f"{where}: key 'rope_parameters.rope_type' is {rope_type!r}; Anvil's model "
                "implements plain rotary embeddings ('default') only"
            )
        for key in ("attention_bias", "mlp_bias"):
            if hf.get(key):
                raise ExportError(f"{where}: key '{key}' is true; Anvil's Llama-style model has no biases")
        if hf.get("hidden_act", "silu") != "silu":
            raise ExportError(f"{where}: key 'hidden_act' is {hf['hidden_act']!r}, expected 'silu' (SwiGLU)")
        d, heads = _need(hf, "hidden_size", where), _need(hf, "num_attention_heads", where)
        if hf.get("head_dim") not in (None, d // heads):
            raise ExportError(
                f"{where}: key 'head_dim' is {hf['head_dim']}, Anvil needs hidden_size / "
                f"num_attention_heads = {d // heads}"
            )
        values = dict(
            arch="llama",
            n_layers=_need(hf, "num_hidden_layers", where),
            d_model=d,
            n_heads=heads,
            n_kv_heads=hf.get("num_key_value_heads") or heads,
            vocab_size=_need(hf, "vocab_size", where),
            seq_len=_need(hf, "max_position_embeddings", where),
            ffn_hidden=_need(hf, "intermediate_size", where),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        )
    elif mtype == "gpt2":
        if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ExportError(
                f"{where}: key 'activation_function' is {hf['activation_function']!r}, "
                "expected the tanh GELU ('gelu_new')"
            )
        if (
            hf.get("scale_attn_by_inverse_layer_idx")
            or hf.get("reorder_and_upcast_attn")
            or not hf.get("scale_attn_weights", True)
        ):
            raise ExportError(
                f"{where}: keys 'scale_attn_*' / 'reorder_and_upcast_attn' differ from plain "
                "1/sqrt(head_dim) attention, which Anvil implements"
            )
        d = _need(hf, "n_embd", where)
        values = dict(
            arch="gpt2",
            n_layers=_need(hf, "n_layer", where),
            d_model=d,
            n_heads=_need(hf, "n_head", where),
            n_kv_heads=None,
            vocab_size=_need(hf, "vocab_size", where),
            seq_len=_need(hf, "n_positions", where),
            ffn_hidden=hf.get("n_inner") or 4 * d,
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        )
    else:
        raise ExportError(f"{where}: key 'model_type' is {mtype!r}; Anvil imports 'llama' and 'gpt2' models")
    return build(ModelConfig, values, "model")


def read_hf_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = model_dir / "model.safetensors.index.json"
    if (model_dir / "model.safetensors").is_file():
        return load_file(str(model_dir / "model.safetensors"))
    if index.is_file():
        sd: dict[str, torch.Tensor] = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            if not (model_dir / shard).is_file():
                raise ExportError(f"{index}: names shard '{shard}', which is missing")
            sd.update(load_file(str(model_dir / shard)))
        return sd
    if (model_dir / "pytorch_model.bin").is_file():
        return torch.load(model_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ExportError(f"{model_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _expected_hf(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF names and shapes for `cfg`, by running the exporter's mapping over shape-only tensors."""
    meta = {k: torch.empty(s, device="meta") for k, s in expected_shapes(cfg).items()}
    mapped = (to_hf_llama if cfg.arch == "llama" else to_hf_gpt2)(meta, cfg)
    return {k: tuple(v.shape) for k, v in mapped.items()}


def from_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig, where: str) -> dict[str, torch.Tensor]:
    """HF state dict -> Anvil consolidated state dict, after checking every name and shape."""
    sd = {k: v for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"))}
    expected = _expected_hf(cfg)
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    check_state_dict(sd, expected, where)
    out: dict[str, torch.Tensor] = {}
    if cfg.arch == "llama":
        out["embed.tok.weight"], out["norm.weight"] = sd["model.embed_tokens.weight"], sd["model.norm.weight"]
        for i in range(cfg.n_layers):
            for ours, theirs in LLAMA_BLOCK.items():
                out[f"blocks.{i}.{ours}"] = sd[f"model.layers.{i}.{theirs}"]
    else:
        out["embed.tok.weight"], out["embed.pos.weight"] = sd["transformer.wte.weight"], sd["transformer.wpe.weight"]
        out["norm.weight"], out["norm.bias"] = sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"]
        kv = cfg.d_model
        for i in range(cfg.n_layers):
            b, h = f"blocks.{i}.", f"transformer.h.{i}."
            for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
                out[b + f"{ours}.weight"], out[b + f"{ours}.bias"] = (
                    sd[h + f"{theirs}.weight"],
                    sd[h + f"{theirs}.bias"],
                )
            w, bias = sd[h + "attn.c_attn.weight"].t(), sd[h + "attn.c_attn.bias"]
            for j, p in enumerate(("q_proj", "k_proj", "v_proj")):
                out[b + f"attn.{p}.weight"], out[b + f"attn.{p}.bias"] = (
                    w[j * kv : (j + 1) * kv],
                    bias[j * kv : (j + 1) * kv],
                )
            for ours, theirs in (
                ("attn.o_proj", "attn.c_proj"),
                ("mlp.fc_in", "mlp.c_fc"),
                ("mlp.fc_out", "mlp.c_proj"),
            ):
                out[b + f"{ours}.weight"], out[b + f"{ours}.bias"] = (
                    sd[h + f"{theirs}.weight"].t(),
                    sd[h + f"{theirs}.bias"],
                )
    if not cfg.tie_embeddings:
        out["head.weight"] = sd["lm_head.weight"]
    return {k: v.float().contiguous().clone() for k, v in out.items()}


def permute_for_rotate_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """q/k rows from interleaved rotary pairs (Meta's original Llama, GPT-J) to rotate_half order
    (HF Llama and Anvil). Not needed for HF folders, which are already in rotate_half order."""
    out_dim, d = w.shape
    return w.view(n_heads, out_dim // n_heads // 2, 2, d).transpose(1, 2).reshape(out_dim, d)


def fit_positions(weights: dict[str, torch.Tensor], cfg: ModelConfig, where: str) -> dict[str, torch.Tensor]:
    """Learned position embeddings (gpt2) cut to a smaller `model.seq_len` override (positions
    0..seq_len-1 keep their vectors); a longer one has no weights to start from and is refused."""
    pos = weights.get("embed.pos.weight")
    if pos is None or pos.shape[0] == cfg.seq_len:
        return weights
    if pos.shape[0] < cfg.seq_len:
        raise ExportError(
            f"config key 'model.seq_len': {cfg.seq_len} exceeds the {pos.shape[0]} learned positions "
            f"of {where} (n_positions)"
        )
    return {**weights, "embed.pos.weight": pos[: cfg.seq_len].clone()}


def import_hf(model_dir: str | os.PathLike, output: str | os.PathLike, overrides: list[str] | None = None) -> dict:
    """Write RUN_DIR/config.yaml, RUN_DIR/tokenizer.json and a step-0 checkpoint, in this process.

    No engine and no process group: the checkpoint is one shard of the full fp32 weights (no Adam
    moments, Adam step 0), published atomically like a trained checkpoint (`store.write_full`), and
    `anvil train` resumes from it under any layout (ZeRO-3 included), each rank reading its slices.
    Under torchrun every rank checks the config, only rank 0 reads the weights and writes."""
    from framework.checkpoint import store
    from framework.checkpoint.sharded import Piece
    from framework.configtree import dump_yaml

    model_dir, out = Path(model_dir), Path(output)
    hf = read_config(model_dir)
    model_cfg = model_config_from_hf(hf, str(model_dir / "config.json"))
    tok_src = model_dir / "tokenizer.json"
    base = {
        "run_dir": str(out),
        "model": to_dict(model_cfg),
        "data": {"tokenizer": str(out / "tokenizer.json") if tok_src.is_file() else None},
    }
    cfg: RunConfig = build(RunConfig, merge(base, parse_overrides(overrides or [])))
    if to_dict(cfg.model) != to_dict(model_cfg):
        changed = [k for k, v in to_dict(model_cfg).items() if getattr(cfg.model, k) != v and k != "seq_len"]
        if changed:
            raise ExportError(
                f"config key 'model.{changed[0]}': fixed by {model_dir}/config.json, cannot be overridden"
            )
    # What can be checked before knowing the training world size (data-parallel size 1 is the
    # weakest case); `anvil train` checks the rest against its own world size.
    cfg.check_layout(cfg.parallel.tensor * cfg.parallel.pipeline)
    info = {
        "run_dir": str(out),
        "checkpoint": str(out / "checkpoints" / store.checkpoint_name(0)),
        "arch": model_cfg.arch,
        "parameters": None,
    }
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: rank 0 writes the (layout-free) checkpoint
        return info  # (and checks the folder: here it may already have written it)
    if (out / "checkpoints" / store.LATEST).is_file():
        raise ExportError(f"{out}: already holds checkpoints; import into a new folder")
    weights = from_hf(read_hf_weights(model_dir), model_cfg, str(model_dir))
    weights = fit_positions(weights, cfg.model, str(model_dir))
    check_state_dict(weights, expected_shapes(cfg.model), str(model_dir))
    out.mkdir(parents=True, exist_ok=True)
    if tok_src.is_file():
        shutil.copyfile(tok_src, out / "tokenizer.json")
    config_yaml = dump_yaml(cfg)
    (out / "config.yaml").write_text(config_yaml)
    meta = {
        "step": 0,
        "consumed_samples": 0,
        "tokens": 0,
        "tokenizer": str((out / "tokenizer.json").resolve()) if tok_src.is_file() else None,
        "stability": {},
        "config": to_dict(cfg),
        "imported_from": str(model_dir.resolve()),
    }
    items = ((Piece.full(name, "fp32", w.shape), w) for name, w in sorted(weights.items()))
    store.write_full(out / "checkpoints", 0, items, meta, config_yaml, adam_step=0, keep=cfg.train.keep_checkpoints)
    info["parameters"] = sum(v.numel() for v in weights.values())
    return info
