"""Tiny local Hugging Face folders for interop tests: random weights, a BPE tokenizer trained on
the sample corpus, never a download."""

from __future__ import annotations

import json
from pathlib import Path

from data_pipeline.sample import iter_sample_documents


def sample_jsonl(path: Path, limit: int = 200) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for doc in iter_sample_documents(limit):
            f.write(json.dumps({"id": doc.id, "text": doc.text}) + "\n")
    return path


def train_tokenizer_json(path: Path, vocab_size: int = 320, limit: int = 200) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((d.text for d in iter_sample_documents(limit)), trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def tiny_llama_folder(
    out: Path, seed: int = 0, tie: bool = False, layers: int = 2, vocab_size: int | None = None, init_std: float = 0.02
) -> Path:
    """`init_std` well above the default 0.02 gives logits far from uniform, so a model that lost
    its weights (re-initialised, shuffled) has a clearly different loss."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok_path = train_tokenizer_json(out.parent / f"{out.name}_tokenizer.json")
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_file=str(tok_path), eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token=None
    )
    config = LlamaConfig(
        vocab_size=vocab_size or len(hf_tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
        bos_token_id=hf_tok.eos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)
    return out
