"""Hyperparameter rules: each run's learning rate, batch size and AdamW beta2 from a published law.

A sweep whose runs are tuned by hand (or not at all) measures the tuning as much as the scaling:
a fixed learning rate is too high for the largest model and too low for the smallest, which bends
every isoFLOP curve. `rules.hparams` picks one of these laws (N: non-embedding parameters, C:
training FLOPs, batch in tokens):

- `porian` - Porian et al. 2024, "Resolving Discrepancies in Compute-Optimal Scaling of Language
  Models" (arXiv:2406.19146), in the form OLMo-core's model ladder uses it
  (olmo_core/model_ladder/wsds_chinchilla_run_configurator.py):
      B(N)  = 160 x 2048 x (N / 108e6)^(2/3)   tokens (160 sequences of 2048 at N = 108M)
      lr(N) = 0.0047 x (N / 108e6)^(-1/3)
      beta2 = 0.99 when B < 524,288 tokens, else 0.95 (the paper: raise beta2 at small batches).
  OLMo-core halves that lr for its WSD schedule; here `rules.lr_multiplier` does that if wanted.
- `deepseek` - DeepSeek LLM (Bi et al. 2024, arXiv:2401.02954, section 3.1):
      lr(C) = 0.3118 x C^(-0.1250),   B(C) = 0.2920 x C^(0.3271) tokens,
  with C = M x D and M the non-embedding FLOPs per token, M = 72 L d^2 + 6 L T d for their
  blocks; here M = 6 N + 6 L T d with N this model's exact non-embedding count (the same thing
  for a 4d-wide MLP, correct for SwiGLU).
- `fitted` - a law fitted on this machine by `anvil sweep fit --hparams` from an lr x batch grid
  (`grid.kind: hparams`), in DeepSeek's form lr = k_lr C^e_lr, B = k_B C^e_B with C = 6 N D.

The second half of this module is that fit: per budget, the near-optimal region (runs within
`tolerance` of the budget's best loss, DeepSeek used 0.25%) summarised by its geometric centre,
or the vertex of a quadratic surface in (log lr, log B); then a straight line through log lr (and
log B) against log C.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PORIAN_N_REF = 108e6
PORIAN_BATCH_TOKENS = 160 * 2048
PORIAN_LR = 0.0047
PORIAN_BETA2_THRESHOLD = 524_288  # tokens; OLMo-core's reading of the paper's small-batch advice
DEEPSEEK_LR = (0.3118, -0.1250)  # lr_opt = coef * C^exponent
DEEPSEEK_BATCH = (0.2920, 0.3271)  # B_opt = coef * C^exponent, tokens
DEEPSEEK_TOLERANCE = 0.0025  # "near-optimal": within 0.25% of the minimum loss


class HparamError(ValueError):
    """Bad input to a hyperparameter rule or fit."""


@dataclass(frozen=True)
class Hparams:
    lr: float
    batch_tokens: float  # the law's value, before rounding to whole sequences
    beta2: float | None  # None: the base config's
    rule: str


def porian(N: float) -> tuple[float, float]:
    """(lr, batch tokens) of Porian et al. 2024 for N non-embedding parameters."""
    ratio = float(N) / PORIAN_N_REF
    return PORIAN_LR * ratio ** (-1.0 / 3.0), PORIAN_BATCH_TOKENS * ratio ** (2.0 / 3.0)


def porian_beta2(
    batch_tokens: float, threshold: float = PORIAN_BETA2_THRESHOLD, small: float = 0.99, large: float = 0.95
) -> float:
    return small if batch_tokens < threshold else large


def deepseek(C: float) -> tuple[float, float]:
    """(lr, batch tokens) of DeepSeek LLM for C = M D training FLOPs."""
    return DEEPSEEK_LR[0] * float(C) ** DEEPSEEK_LR[1], DEEPSEEK_BATCH[0] * float(C) ** DEEPSEEK_BATCH[1]


def deepseek_compute(N: float, n_layers: int, d_model: int, seq_len: int, D: float) -> float:
    """DeepSeek's C = M D with M = 6 N_non-embedding + 6 L T d (attention, no vocabulary)."""
    return (6.0 * N + 6.0 * n_layers * seq_len * d_model) * D


def load_law(path: str | Path) -> dict:
    """The power laws of an hparams.json written by `anvil sweep fit --hparams`."""
    path = Path(path)
    if not path.is_file():
        raise HparamError(
            f"hyperparameter fit not found: {path} (write it with `anvil sweep fit RESULTS.csv "
            "--hparams --output hparams.json`)"
        )
    try:
        law = json.loads(path.read_text())
        for key in ("lr", "batch_tokens"):
            coef, exp = float(law[key]["coef"]), float(law[key]["exponent"])
            if not (math.isfinite(coef) and coef > 0 and math.isfinite(exp)):
                raise ValueError(f"{key}: coef must be positive and exponent finite, got {coef}, {exp}")
    except (ValueError, KeyError, TypeError) as exc:
        raise HparamError(
            f"{path}: not an hparams fit ({exc}); expected "
            '{"lr": {"coef", "exponent"}, "batch_tokens": {"coef", "exponent"}}'
        ) from None
    return law


def fitted(law: dict, C: float) -> tuple[float, float]:
    return (
        law["lr"]["coef"] * float(C) ** law["lr"]["exponent"],
        law["batch_tokens"]["coef"] * float(C) ** law["batch_tokens"]["exponent"],
    )


# ---------------------------------------------------------------------------------------------
# Fitting the laws from an lr x batch grid (the DeepSeek procedure)
# ---------------------------------------------------------------------------------------------
def read_hparam_results(path: str | Path) -> tuple[dict[str, np.ndarray], int]:
    """Columns C (or budget), lr, batch_tokens (or global_batch_size x seq_len), loss. Bad rows
    are skipped and counted."""
    from framework.scaling.fit import FitError

    path = Path(path)
    if not path.is_file():
        raise FitError(f"results file not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(line for line in fh if not line.startswith("#"))
        header = set(reader.fieldnames or [])
        need = [c for c in ("lr", "loss") if c not in header]
        if not header & {"C", "budget"}:
            need.append("C (or budget)")
        if "batch_tokens" not in header and not {"global_batch_size", "seq_len"} <= header:
            need.append("batch_tokens (or global_batch_size and seq_len)")
        if need:
            raise FitError(f"{path}: --hparams needs column(s) {', '.join(need)} (found {', '.join(sorted(header))})")
        rows, skipped = [], 0
        for row in reader:
            try:
                c = float(row["budget"]) if row.get("budget") not in (None, "", "0", "0.0") else float(row["C"])
                b = (
                    float(row["batch_tokens"])
                    if row.get("batch_tokens") not in (None, "")
                    else float(row["global_batch_size"]) * float(row["seq_len"])
                )
                vals = (c, float(row["lr"]), b, float(row["loss"]))
            except (TypeError, ValueError, KeyError):
                skipped += 1
                continue
            if not all(math.isfinite(v) and v > 0 for v in vals):
                skipped += 1
                continue
            rows.append(vals)
    if not rows:
        raise FitError(f"{path}: no usable rows for --hparams ({skipped} skipped)")
    arr = np.array(rows, dtype=np.float64)
    return {"C": arr[:, 0], "lr": arr[:, 1], "batch_tokens": arr[:, 2], "loss": arr[:, 3]}, skipped


def _quadratic_vertex(x: np.ndarray, y: np.ndarray, loss: np.ndarray) -> tuple[float, float] | None:
    """Vertex of loss ~ c0 + c1 x + c2 y + c3 x^2 + c4 y^2 + c5 x y, if it is a minimum inside the
    sampled box (needs >= 3 distinct values on each axis)."""
    if len(np.unique(x)) < 3 or len(np.unique(y)) < 3:
        return None
    X = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)
    c, *_ = np.linalg.lstsq(X, loss, rcond=None)
    H = np.array([[2 * c[3], c[5]], [c[5], 2 * c[4]]])
    if np.linalg.det(H) <= 0 or H[0, 0] <= 0:
        return None
    vx, vy = np.linalg.solve(H, -c[1:3])
    if not (x.min() <= vx <= x.max() and y.min() <= vy <= y.max()):
        return None
    return float(vx), float(vy)


def fit_hparams(
    C, lr, batch_tokens, loss, tolerance: float = DEEPSEEK_TOLERANCE, method: str = "near-optimal", rtol: float = 0.05
) -> dict:
    """Power laws lr_opt(C) and B_opt(C) from per-budget lr x batch grids (see the module doc)."""
    from framework.scaling.fit import FitError, group_budgets

    if method not in ("near-optimal", "quadratic"):
        raise FitError(f"unknown hparams method {method!r}: expected near-optimal or quadratic")
    if not 0 <= tolerance < 1:
        raise FitError(f"--tolerance must be in [0, 1), got {tolerance}")
    C, lr, bt, loss = (np.asarray(v, dtype=np.float64) for v in (C, lr, batch_tokens, loss))
    labels = group_budgets(C, rtol)
    budgets = []
    for g in range(labels.max() + 1):
        sel = labels == g
        x, y, l_ = np.log(lr[sel]), np.log(bt[sel]), loss[sel]
        near = l_ <= l_.min() * (1 + tolerance)
        entry = {
            "C": float(np.exp(np.mean(np.log(C[sel])))),
            "runs": int(sel.sum()),
            "near_optimal": int(near.sum()),
            "best": {
                "lr": float(lr[sel][np.argmin(l_)]),
                "batch_tokens": float(bt[sel][np.argmin(l_)]),
                "loss": float(l_.min()),
            },
        }
        opt = (float(x[near].mean()), float(y[near].mean()))
        entry["estimate"] = "near-optimal centre"
        if method == "quadratic":
            vertex = _quadratic_vertex(x, y, l_)
            if vertex is not None:
                opt, entry["estimate"] = vertex, "quadratic vertex"
        entry["lr_opt"], entry["batch_tokens_opt"] = float(np.exp(opt[0])), float(np.exp(opt[1]))
        budgets.append(entry)
    if len(budgets) < 2:
        raise FitError(
            f"--hparams needs at least two budgets (C values more than {rtol:.0%} apart), got {len(budgets)}"
        )
    lc = np.log([b["C"] for b in budgets])
    out = {
        "law": "lr_opt(C) = coef C^exponent; B_opt(C) = coef C^exponent tokens; C = training FLOPs of the results' "
        "budget (6ND unless a budget column says otherwise)",
        "method": method,
        "tolerance": tolerance,
        "budgets": budgets,
        "source": "DeepSeek LLM (arXiv:2401.02954) section 3.1: near-optimal region per budget, power law in C",
    }
    for key, col in (("lr", "lr_opt"), ("batch_tokens", "batch_tokens_opt")):
        exponent, intercept = np.polyfit(lc, np.log([b[col] for b in budgets]), 1)
        out[key] = {"coef": float(np.exp(intercept)), "exponent": float(exponent)}
    return out
