"""Plan a sweep: from budgets and a model family's shape rules to one row per training run.

`plan(cfg)` is pure (no files, no torch): each row holds the model shape, non-embedding N, tokens
D, batch, learning rate, schedule and the `anvil train` overrides that realise it. N counts what
`framework.model.presets.count_params` counts as non-embedding (every block weight and norm, the
final norm; not the token embedding or the output head) — tests cross-check the two. FLOPs:
`grid.flops: 6nd` plans with C = 6 N D (Kaplan/Hoffmann, N non-embedding); `grid.flops: model`
uses the model's own training FLOPs per token (matmuls incl. the output head, plus attention),
which matters for tiny models whose head and attention dominate. Both are written to the plan.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from framework.configtree import ConfigError
from framework.scaling.config import FamilyConfig, SweepConfig


@dataclass(frozen=True)
class Shape:
    n_layers: int
    d_model: int
    n_heads: int


def ffn_hidden(d_model: int, arch: str) -> int:
    # Same rule as framework.model.transformer.ffn_hidden_size (ffn_hidden unset).
    return 4 * d_model if arch == "gpt2" else 64 * math.ceil(8 * d_model / 3 / 64)


def non_embedding_params(shape: Shape, fam: FamilyConfig) -> int:
    d, f = shape.d_model, ffn_hidden(shape.d_model, fam.arch)
    gpt2 = fam.arch == "gpt2"
    attn = 4 * d * d + (4 * d if gpt2 else 0)  # q, k, v, o (+ biases); no grouped-query attention here
    mlp = (2 * d * f + f + d) if gpt2 else 3 * d * f
    norm = 2 * d if gpt2 else d  # LayerNorm has a bias, RMSNorm does not
    return shape.n_layers * (attn + mlp + 2 * norm) + norm


def flops_per_token(shape: Shape, fam: FamilyConfig) -> float:
    """Training FLOPs per token as the model counts them: 6 per matmul weight (head included) plus
    attention scores/values, 12 L T d (no causal discount)."""
    d, L = shape.d_model, shape.n_layers
    f = ffn_hidden(d, fam.arch)
    matmul = L * (4 * d * d + (2 if fam.arch == "gpt2" else 3) * d * f) + fam.vocab_size * d
    return float(6 * matmul + 12 * L * fam.seq_len * d)


def family_shapes(fam: FamilyConfig) -> list[Shape]:
    """Candidate shapes, smallest first: explicit `shapes`, or one per depth from the aspect ratio."""
    if fam.shapes:
        shapes = [Shape(int(L), int(d), int(d) // fam.head_dim) for L, d in fam.shapes]
    else:
        shapes = []
        for L in range(fam.min_layers, fam.max_layers + 1):
            d = max(fam.head_dim, int(round(fam.aspect_ratio * L / fam.head_dim)) * fam.head_dim)
            if fam.arch == "llama" and fam.head_dim % 2:
                raise ConfigError(f"config key 'family.head_dim': rotary embeddings need an even head size, got {fam.head_dim}")
            shapes.append(Shape(L, d, d // fam.head_dim))
    unique = {non_embedding_params(s, fam): s for s in shapes}  # equal N: keep the last (deeper) one
    return [unique[n] for n in sorted(unique)]


def pick_sizes(shapes: list[Shape], counts: list[int], centre: float, k: int, span: float) -> list[int]:
    """Indices of `k` distinct shapes nearest to log-spaced targets over [centre/sqrt(span), centre*sqrt(span)]."""
    k = min(k, len(shapes))
    logs = [math.log(n) for n in counts]
    lo, hi = math.log(centre) - math.log(span) / 2, math.log(centre) + math.log(span) / 2
    targets = [lo + (hi - lo) * i / (k - 1) for i in range(k)] if k > 1 else [math.log(centre)]
    chosen: list[int] = []
    for t in targets:
        order = sorted(range(len(shapes)), key=lambda i: (abs(logs[i] - t), i))
        chosen.append(next(i for i in order if i not in chosen))
    return sorted(chosen)


PLAN_COLUMNS = ["name", "budget", "n_layers", "d_model", "n_heads", "vocab_size", "seq_len", "N", "D", "C",
                "C_model", "flops_per_token", "tokens_per_param", "steps", "global_batch_size",
                "micro_batch_size", "lr", "warmup_steps", "schedule", "min_lr_ratio", "eval_interval",
                "eval_iters", "checkpoint_interval"]


def _row(cfg: SweepConfig, shape: Shape, budget: float, tokens_target: float) -> dict | None:
    fam, rules = cfg.family, cfg.rules
    tokens_per_step = rules.global_batch_size * fam.seq_len
    steps = max(1, int(round(tokens_target / tokens_per_step)))
    if steps < cfg.grid.min_steps:
        return None
    n = non_embedding_params(shape, fam)
    fpt = flops_per_token(shape, fam)
    D = steps * tokens_per_step
    lr = rules.lr * (rules.lr_base_width / shape.d_model) ** rules.lr_width_exponent
    evals = min(rules.evals, steps)
    tag = f"{budget:.2g}".replace("+", "") if budget else f"D{D:.2g}".replace("+", "")
    return {
        "name": f"c{tag}_L{shape.n_layers}_d{shape.d_model}" if budget else f"{tag}_L{shape.n_layers}_d{shape.d_model}",
        "budget": budget, "n_layers": shape.n_layers, "d_model": shape.d_model, "n_heads": shape.n_heads,
        "vocab_size": fam.vocab_size, "seq_len": fam.seq_len, "N": n, "D": D, "C": 6.0 * n * D,
        "C_model": fpt * D, "flops_per_token": fpt, "tokens_per_param": D / n, "steps": steps,
        "global_batch_size": rules.global_batch_size, "micro_batch_size": rules.micro_batch_size,
        "lr": float(f"{lr:.6g}"), "warmup_steps": max(rules.min_warmup_steps, int(rules.warmup_fraction * steps)),
        "schedule": rules.schedule, "min_lr_ratio": rules.min_lr_ratio,
        "eval_interval": max(1, steps // evals), "eval_iters": rules.eval_iters,
        "checkpoint_interval": max(1, math.ceil(steps / rules.checkpoints)),
    }


def plan(cfg: SweepConfig) -> tuple[list[dict], int]:
    """(rows, dropped): one row per run; `dropped` counts runs under `grid.min_steps` steps."""
    fam, grid = cfg.family, cfg.grid
    shapes = family_shapes(fam)
    counts = [non_embedding_params(s, fam) for s in shapes]
    rows, dropped = [], 0
    if grid.kind == "explicit":
        pairs = [(s, 0.0, float(t)) for t in grid.tokens for s in shapes]
    else:
        pairs = []
        for budget in grid.budgets:
            # C = 6 N D with D = r N gives the centre N = sqrt(C / (6 r)).
            centre = math.sqrt(budget / (6.0 * grid.tokens_per_param))
            for i in pick_sizes(shapes, counts, centre, grid.sizes_per_budget, grid.size_span):
                per_token = 6.0 * counts[i] if grid.flops == "6nd" else flops_per_token(shapes[i], fam)
                pairs.append((shapes[i], float(budget), budget / per_token))
    for shape, budget, tokens in pairs:
        row = _row(cfg, shape, budget, tokens)
        if row is None:
            dropped += 1
        else:
            rows.append(row)
    if not rows:
        raise ConfigError(f"config key 'grid': every planned run is shorter than grid.min_steps={grid.min_steps} "
                          "steps; raise the budgets or lower rules.global_batch_size")
    return rows, dropped


def run_overrides(row: dict, cfg: SweepConfig, run_dir: str) -> list[str]:
    """The `key=value` overrides that turn the base training config into this planned run."""
    fam = cfg.family
    out = [f"seed={cfg.seed}", f"run_dir={run_dir}", f"model.arch={fam.arch}", f"model.n_layers={row['n_layers']}",
           f"model.d_model={row['d_model']}", f"model.n_heads={row['n_heads']}", "model.n_kv_heads=null",
           "model.ffn_hidden=null", f"model.vocab_size={row['vocab_size']}", f"model.seq_len={row['seq_len']}",
           f"model.tie_embeddings={str(fam.tie_embeddings).lower()}",
           f"train.steps={row['steps']}", f"train.global_batch_size={row['global_batch_size']}",
           f"train.micro_batch_size={row['micro_batch_size']}", f"train.lr={row['lr']}",
           f"train.warmup_steps={row['warmup_steps']}", f"train.schedule={row['schedule']}",
           f"train.min_lr_ratio={row['min_lr_ratio']}", f"train.eval_interval={row['eval_interval']}",
           f"train.eval_iters={row['eval_iters']}", f"train.checkpoint_interval={row['checkpoint_interval']}",
           f"train.log_interval={max(1, min(10, row['eval_interval']))}"]
    return out + list(cfg.overrides)


def write_plan(rows: list[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # concurrent writers (Slurm array tasks)
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PLAN_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in PLAN_COLUMNS})
    os.replace(tmp, path)


def shape_of(row: dict) -> dict:
    return asdict(Shape(int(row["n_layers"]), int(row["d_model"]), int(row["n_heads"])))
