"""Benchmark: perplexity scoring throughput (the `perplexity` curation step) by batch size.

    .venv/bin/python benchmarks/perplexity.py [--docs 100] [--max-tokens 256] [--d-model 256]

Scores sample-corpus documents with a randomly initialised Llama-style transformers model (the
speed does not depend on the weights) and its BPE tokenizer, at several batch sizes. Reports docs
and tokens per wall-second and per CPU-second of this process (`time.process_time`, all threads:
on a shared machine wall time also measures the neighbours), and the largest per-document loss
difference from batch size 1 (batching must not change scores). Results go to
benchmarks/results/perplexity.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))
# One intra-op thread unless the caller chose: on a shared 2-core machine two threads spin against
# the neighbours (measured: 3x slower at load 3), and docs/s per core is what a worker pool scales.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from benchmarks.common import Recorder, row  # noqa: E402


BATCHES = (1, 8, 32)


def build_model(folder: Path, d_model: int, docs: list[str]) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        docs,
        trainers.BpeTrainer(
            vocab_size=2048,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=d_model,
        intermediate_size=4 * d_model,
        num_hidden_layers=4,
        num_attention_heads=max(1, d_model // 64),
        max_position_embeddings=512,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    hf_tok.save_pretrained(folder)


def main() -> None:
    rec = Recorder("perplexity")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100, help="sample-corpus documents scored (default 100)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--d-model", type=int, default=256)
    args = ap.parse_args()

    from data_pipeline.sample import iter_sample_documents
    from framework.eval.perplexity import load_scorer, score_texts
    from framework.runtime import print_table

    texts = [d.text for d in iter_sample_documents(args.docs)]
    with tempfile.TemporaryDirectory() as tmp:
        build_model(Path(tmp) / "lm", args.d_model, texts)
        scorer = load_scorer(Path(tmp) / "lm")
        rows, reference = [], None
        score_texts(scorer, texts[:8], batch_size=8, max_tokens=args.max_tokens)  # warm-up
        for batch in BATCHES:
            start, cpu = time.perf_counter(), time.process_time()
            scores = score_texts(scorer, texts, batch_size=batch, max_tokens=args.max_tokens)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            tokens = sum(s["tokens"] for s in scores)
            reference = reference or scores
            diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(scores, reference) if a["tokens"])
            rows.append(
                {
                    "batch": batch,
                    "docs": len(texts),
                    "tokens": tokens,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "docs_per_s": len(texts) / wall,
                    "docs_per_cpu_s": len(texts) / cpu,
                    "tokens_per_cpu_s": tokens / cpu,
                    "max_loss_diff_vs_b1": diff,
                }
            )
    what = f"d_model {args.d_model}, 4 layers, <= {args.max_tokens} tokens/doc"
    print_table(rows, title=f"perplexity scoring, {what}")
    by = {r["batch"]: r for r in rows}
    speed = ", ".join(f"b{b}: {r['docs_per_s']:.1f}" for b, r in by.items())
    diff = max(r["max_loss_diff_vs_b1"] for r in rows)
    out = [
        row(
            f"Perplexity step scoring by batch size ({len(texts)} sample docs, Llama {what})",
            f"docs per wall-s, one process, torch threads: {threads()}",
            speed,
            ratio=f"b{BATCHES[-1]}/b1 {by[BATCHES[-1]]['docs_per_s'] / by[1]['docs_per_s']:.1f}x",
        ),
        row(
            "Perplexity step: batching leaves scores unchanged",
            "max |loss difference| per doc vs batch 1, nats/token",
            f"{diff:.1e}",
        ),
    ]
    rec.write({"settings": vars(args), "threads": threads(), "by_batch": rows}, out, "sample corpus (no download)")


def threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
