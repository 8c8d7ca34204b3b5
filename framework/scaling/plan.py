"""Plan a sweep: from budgets and a model family's shape rules to one row per training run.

`plan(cfg)` is pure (no files, no torch): each row holds the model shape, non-embedding N, tokens
D, batch, learning rate, schedule and the `anvil train` overrides that realise it. N counts what
`framework.model.presets.count_params` counts as non-embedding (every block weight and norm, the
final norm; not the token embedding or the output head) — tests cross-check the two. FLOPs:
`grid.flops: 6nd` plans with C = 6 N D (Kaplan/Hoffmann, N non-embedding); `grid.flops: model`
uses the model's own training FLOPs per token (matmuls incl. the output head, plus attention),
which matters for tiny models whose head and attention dominate. Both are written to the plan.

Placement (`grid.placement: bracket`): each budget's sizes are chosen around the predicted
compute-optimal N (from `grid.prior_fit`, else N = sqrt(C / (6 r))) with at least
`grid.min_each_side` sizes strictly below and above it, so every isoFLOP parabola has its vertex
inside the sampled sizes; `placement_report` says where the ladder could not do that.
Hyperparameters (lr, batch, beta2) come from `rules.hparams` (framework.scaling.hparams); the
`rule` column records which law set each run.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from framework.configtree import ConfigError
from framework.scaling import hparams as hp
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
                raise ConfigError(
                    f"config key 'family.head_dim': rotary embeddings need an even head size, got {fam.head_dim}"
                )
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


def bracket_sizes(counts: list[int], n_opt: float, k: int, span: float) -> list[int]:
    """Indices of `k` distinct sizes around `n_opt`: k // 2 strictly below it and k // 2 strictly
    above where the ladder has them, each side's picks nearest to log-spaced targets spread over a
    factor sqrt(span); an odd k adds the size nearest n_opt. A side short of sizes is filled from
    the other side (placement_report flags it against grid.min_each_side)."""
    below = [i for i, n in enumerate(counts) if n < n_opt]
    above = [i for i, n in enumerate(counts) if n > n_opt]
    k = min(k, len(counts))
    half = k // 2
    want_below, want_above = min(half, len(below)), min(half, len(above))
    deficit = 2 * half - want_below - want_above  # what a short side could not provide
    extra = min(deficit, len(below) - want_below)
    want_below, deficit = want_below + extra, deficit - extra
    want_above += min(deficit, len(above) - want_above)

    def side(candidates: list[int], count: int, sign: float) -> list[int]:
        step = math.log(span) / 2 / max(count, 1)
        chosen: list[int] = []
        for j in range(1, count + 1):
            t = math.log(n_opt) + sign * step * (j - 0.5)
            order = sorted(candidates, key=lambda i: (abs(math.log(counts[i]) - t), i))
            chosen.append(next(i for i in order if i not in chosen))
        return chosen

    chosen = side(below, want_below, -1.0) + side(above, want_above, 1.0)
    rest = sorted(
        (i for i in range(len(counts)) if i not in chosen),
        key=lambda i: (abs(math.log(counts[i]) - math.log(n_opt)), i),
    )
    chosen += rest[: max(0, k - len(chosen))]
    return sorted(chosen)


def predicted_optimum(cfg: SweepConfig, budget: float, prior: dict | None) -> float:
    """N_opt at `budget`: G (C/6)^a from a prior fit.json, else sqrt(C / (6 tokens_per_param))."""
    if prior is not None:
        return float(prior["G"] * (budget / 6.0) ** prior["a"])
    return math.sqrt(budget / (6.0 * cfg.grid.tokens_per_param))


def load_prior(path: str | None) -> dict | None:
    if not path:
        return None
    import json

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config key 'grid.prior_fit': file not found: {path}")
    try:
        fit = json.loads(p.read_text())
        prior = {"G": float(fit["G"]), "a": float(fit["a"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"config key 'grid.prior_fit': {path} is not a fit.json with G and a ({exc})") from None
    if not (prior["G"] > 0 and math.isfinite(prior["a"])):
        raise ConfigError(f"config key 'grid.prior_fit': {path} has G={prior['G']}, a={prior['a']}: no usable optimum")
    return prior


PLAN_COLUMNS = [
    "name",
    "budget",
    "n_layers",
    "d_model",
    "n_heads",
    "vocab_size",
    "seq_len",
    "N",
    "D",
    "C",
    "C_model",
    "flops_per_token",
    "tokens_per_param",
    "steps",
    "global_batch_size",
    "micro_batch_size",
    "lr",
    "warmup_steps",
    "schedule",
    "min_lr_ratio",
    "eval_interval",
    "eval_iters",
    "checkpoint_interval",
    "batch_tokens",
    "beta2",
    "rule",
    "n_opt",
    "unique_tokens",
]


def rule_hparams(cfg: SweepConfig, shape: Shape, n: int, tokens: float, law: dict | None = None) -> hp.Hparams:
    """The learning rate, batch (tokens) and beta2 that `rules.hparams` gives this run."""
    rules, fam = cfg.rules, cfg.family
    if rules.hparams == "fixed":
        lr = rules.lr * (rules.lr_base_width / shape.d_model) ** rules.lr_width_exponent
        return hp.Hparams(lr, float(rules.global_batch_size * fam.seq_len), rules.beta2, "fixed")
    if rules.hparams == "porian":
        lr, batch = hp.porian(n)
        batch *= rules.batch_multiplier
        beta2 = hp.porian_beta2(batch, rules.beta2_batch_tokens, rules.beta2_small_batch, rules.beta2_large_batch)
        return hp.Hparams(lr * rules.lr_multiplier, batch, beta2, "porian")
    if rules.hparams == "deepseek":
        lr, batch = hp.deepseek(hp.deepseek_compute(n, shape.n_layers, shape.d_model, fam.seq_len, tokens))
        return hp.Hparams(lr * rules.lr_multiplier, batch * rules.batch_multiplier, rules.beta2, "deepseek")
    law = law if law is not None else hp.load_law(rules.hparams_fit)
    lr, batch = hp.fitted(law, 6.0 * n * tokens)
    return hp.Hparams(
        lr * rules.lr_multiplier,
        batch * rules.batch_multiplier,
        rules.beta2,
        f"fitted:{Path(rules.hparams_fit or 'hparams.json').name}",
    )


def batch_sequences(batch_tokens: float, seq_len: int, micro: int) -> tuple[int, int]:
    """(global, micro) batch in sequences: the law's tokens rounded to whole sequences, then to a
    multiple of the micro batch (or the micro batch shrunk to the global one)."""
    seqs = max(1, round(batch_tokens / seq_len))
    if seqs <= micro:
        return seqs, seqs
    return micro * max(1, round(seqs / micro)), micro


def _row(
    cfg: SweepConfig,
    shape: Shape,
    budget: float,
    tokens_target: float,
    n_opt: float = 0.0,
    law: dict | None = None,
    lr_factor: float = 1.0,
    batch_factor: float = 1.0,
) -> dict | None:
    fam, rules = cfg.family, cfg.rules
    n = non_embedding_params(shape, fam)
    h = rule_hparams(cfg, shape, n, tokens_target, law)
    if rules.hparams == "fixed" and batch_factor == 1.0:
        gbs, micro = rules.global_batch_size, rules.micro_batch_size
    else:
        gbs, micro = batch_sequences(h.batch_tokens * batch_factor, fam.seq_len, rules.micro_batch_size)
    lr, rule = h.lr * lr_factor, h.rule
    if lr_factor != 1.0 or batch_factor != 1.0 or cfg.grid.kind == "hparams":
        rule = f"{h.rule} lr x{lr_factor:g} batch x{batch_factor:g}"
    tokens_per_step = gbs * fam.seq_len
    steps = max(1, int(round(tokens_target / tokens_per_step)))
    if steps < cfg.grid.min_steps:
        return None
    fpt = flops_per_token(shape, fam)
    D = steps * tokens_per_step
    evals = min(rules.evals, steps)
    tag = f"{budget:.2g}".replace("+", "") if budget else f"D{D:.2g}".replace("+", "")
    name = f"c{tag}_L{shape.n_layers}_d{shape.d_model}" if budget else f"{tag}_L{shape.n_layers}_d{shape.d_model}"
    if cfg.grid.kind == "hparams":
        name += f"_lr{lr_factor:g}_b{batch_factor:g}"
    return {
        "name": name,
        "budget": budget,
        "n_layers": shape.n_layers,
        "d_model": shape.d_model,
        "n_heads": shape.n_heads,
        "vocab_size": fam.vocab_size,
        "seq_len": fam.seq_len,
        "N": n,
        "D": D,
        "C": 6.0 * n * D,
        "C_model": fpt * D,
        "flops_per_token": fpt,
        "tokens_per_param": D / n,
        "steps": steps,
        "global_batch_size": gbs,
        "micro_batch_size": micro,
        "lr": float(f"{lr:.6g}"),
        "warmup_steps": max(rules.min_warmup_steps, int(rules.warmup_fraction * steps)),
        "schedule": rules.schedule,
        "min_lr_ratio": rules.min_lr_ratio,
        "eval_interval": max(1, steps // evals),
        "eval_iters": rules.eval_iters,
        "checkpoint_interval": max(1, math.ceil(steps / rules.checkpoints)),
        "batch_tokens": tokens_per_step,
        "beta2": "" if h.beta2 is None else h.beta2,
        "rule": rule,
        "n_opt": float(f"{n_opt:.6g}") if n_opt else "",
        "unique_tokens": cfg.grid.unique_tokens or "",
    }


def _budget_pairs(cfg: SweepConfig, shapes: list[Shape], counts: list[int]) -> list[tuple]:
    """(shape, budget, tokens, n_opt, lr_factor, batch_factor) per run of an isoflop/hparams grid."""
    fam, grid = cfg.family, cfg.grid
    prior = load_prior(grid.prior_fit)
    out = []
    for budget in grid.budgets:
        n_opt = predicted_optimum(cfg, budget, prior)
        if grid.kind == "hparams":
            picks = [min(range(len(counts)), key=lambda i: (abs(math.log(counts[i] / n_opt)), i))]
            factors = [(f, g) for f in grid.lr_factors for g in grid.batch_factors]
        else:
            if grid.placement == "bracket":
                picks = bracket_sizes(counts, n_opt, grid.sizes_per_budget, grid.size_span)
            else:
                picks = pick_sizes(shapes, counts, n_opt, grid.sizes_per_budget, grid.size_span)
            factors = [(1.0, 1.0)]
        for i in picks:
            per_token = 6.0 * counts[i] if grid.flops == "6nd" else flops_per_token(shapes[i], fam)
            out += [(shapes[i], float(budget), budget / per_token, n_opt, f, g) for f, g in factors]
    return out


def plan(cfg: SweepConfig) -> tuple[list[dict], int]:
    """(rows, dropped): one row per run; `dropped` counts runs under `grid.min_steps` steps."""
    fam, grid = cfg.family, cfg.grid
    shapes = family_shapes(fam)
    counts = [non_embedding_params(s, fam) for s in shapes]
    try:
        law = hp.load_law(cfg.rules.hparams_fit) if cfg.rules.hparams == "fitted" else None
    except hp.HparamError as exc:
        raise ConfigError(f"config key 'rules.hparams_fit': {exc}") from None
    rows, dropped = [], 0
    if grid.kind == "explicit":
        pairs = [(s, 0.0, float(t), 0.0, 1.0, 1.0) for t in grid.tokens for s in shapes]
    else:
        pairs = _budget_pairs(cfg, shapes, counts)
    for shape, budget, tokens, n_opt, f, g in pairs:
        row = _row(cfg, shape, budget, tokens, n_opt, law, f, g)
        if row is None:
            dropped += 1
        else:
            rows.append(row)
    if not rows:
        raise ConfigError(
            f"config key 'grid': every planned run is shorter than grid.min_steps={grid.min_steps} "
            "steps; raise the budgets or lower rules.global_batch_size"
        )
    return rows, dropped


def placement_report(rows: list[dict], each_side: int) -> list[dict]:
    """Per budget: the predicted optimum and how many planned sizes lie below and above it."""
    out = []
    for budget in sorted({r["budget"] for r in rows if r["budget"] and r.get("n_opt") not in (None, "")}):
        sub = [r for r in rows if r["budget"] == budget]
        n_opt = float(sub[0]["n_opt"])
        sizes = sorted({int(r["N"]) for r in sub})
        below, above = sum(n < n_opt for n in sizes), sum(n > n_opt for n in sizes)
        out.append(
            {
                "budget": budget,
                "n_opt": n_opt,
                "below": below,
                "above": above,
                "ok": below >= each_side and above >= each_side,
            }
        )
    return out


def run_overrides(row: dict, cfg: SweepConfig, run_dir: str) -> list[str]:
    """The `key=value` overrides that turn the base training config into this planned run."""
    fam = cfg.family
    out = [
        f"seed={cfg.seed}",
        f"run_dir={run_dir}",
        f"model.arch={fam.arch}",
        f"model.n_layers={row['n_layers']}",
        f"model.d_model={row['d_model']}",
        f"model.n_heads={row['n_heads']}",
        "model.n_kv_heads=null",
        "model.ffn_hidden=null",
        f"model.vocab_size={row['vocab_size']}",
        f"model.seq_len={row['seq_len']}",
        f"model.tie_embeddings={str(fam.tie_embeddings).lower()}",
        f"train.steps={row['steps']}",
        f"train.global_batch_size={row['global_batch_size']}",
        f"train.micro_batch_size={row['micro_batch_size']}",
        f"train.lr={row['lr']}",
        f"train.warmup_steps={row['warmup_steps']}",
        f"train.schedule={row['schedule']}",
        f"train.min_lr_ratio={row['min_lr_ratio']}",
        f"train.eval_interval={row['eval_interval']}",
        f"train.eval_iters={row['eval_iters']}",
        f"train.checkpoint_interval={row['checkpoint_interval']}",
        f"train.log_interval={max(1, min(10, row['eval_interval']))}",
    ]
    if row.get("beta2") not in (None, ""):
        out.append(f"train.beta2={row['beta2']}")
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
