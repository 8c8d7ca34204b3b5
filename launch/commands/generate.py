"""`anvil generate --checkpoint DIR --prompt TEXT`: print a continuation sampled from a checkpoint."""

from __future__ import annotations

import argparse

from launch.cli import Command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a run folder (its latest checkpoint) or one checkpoint")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); higher = more random")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0 = off)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the one the run trained with)")
    p.add_argument("--stop-at-eod", action="store_true", help="stop at the end-of-document token")


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.max_new_tokens < 0:
        raise SystemExit("anvil generate: --max-new-tokens must be >= 0")
    if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0:
        raise SystemExit("anvil generate: expected --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0")
    from framework.data.tokenizer import load_tokenizer, special_ids
    from framework.checkpoint.store import CheckpointError
    from framework.eval.generate import generate, load_model

    try:
        model, meta = load_model(args.checkpoint)
    except CheckpointError as exc:
        raise SystemExit(f"anvil generate: {exc}") from None
    tok_path = args.tokenizer or meta.get("tokenizer") or meta["config"]["data"].get("tokenizer")
    if not tok_path or not Path(tok_path).is_file():
        raise SystemExit(f"anvil generate: tokenizer {tok_path!r} not found; pass --tokenizer tokenizer.json")
    tok = load_tokenizer(tok_path)
    ids = tok.encode(args.prompt).ids
    if not ids:
        raise SystemExit("anvil generate: the prompt encodes to no tokens")
    stop = special_ids(tok)[0] if args.stop_at_eod else None
    new = generate(model, ids, args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed, stop)
    print(tok.decode(new))
    return 0


COMMANDS = [
    Command(("generate",), "continue a prompt with a trained checkpoint (greedy at --temperature 0)", _configure, _run)
]
