"""Which corpus is better at a target compute, and how sure we are: the statistics of `anvil ladder`.

Per corpus, L(N, D) = E + A/N^alpha + B/D^beta is fitted to its runs' held-out losses with the
sweep fit (`framework.scaling.fit`: Hoffmann's grid, L-BFGS-B, Huber). A corpus of U unique tokens
is fitted on Muennighoff et al.'s effective data D' (runs that repeat it get less from the
repeats) and its loss at the target compute C is the best over model sizes of L(N, D'(C / 6N, U)),
so a small corpus pays for the epochs the target would make it repeat; without repetition this is
the closed-form compute-optimal loss.

Uncertainty is a bootstrap over runs, paired: every corpus ran the same sweep, so a resample
draws run keys (seed and planned run name) with replacement and each corpus refits
(`fit.refit_resample`) on its runs with those keys. Pairing matters: a resample that leaves out
the largest runs leaves them out for every corpus, so the spread of the extrapolation that the
corpora share cancels in the comparison (with independent resamples it swamps a gap that every
single pair of runs shows). A corpus's interval is the percentile interval of its resampled
predictions; `p_correct` is the fraction of resamples whose ranking equals the point estimate's.
A resample whose fit fails or predicts a non-finite loss counts against the ranking.

Stability: the same analysis on the runs up to each compute level (the isoFLOP budgets, grouped as
`fit.group_budgets` does); the decision is stable from the smallest level after which every
level's ranking equals the final one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from framework.scaling.fit import (
    MUENNIGHOFF_R_STAR_D,
    FitError,
    ParametricFit,
    Points,
    best_loss_at,
    effective_data,
    fit_all,
    fit_parametric,
    group_budgets,
    init_grid,
    refit_resample,
)

MIN_RUNS = 5  # the parametric law has five free parameters
# Grid starts of each resample's fit besides the full-data optimum (`sweep fit --bootstrap` uses 8):
# a ladder refits K corpora x resamples x compute levels, and on a dozen runs each L-BFGS-B start
# takes 100-300 iterations (~50 ms); the full-data optimum is the start that wins almost always.
BOOT_STARTS = 1
CACHE_VERSION = 2  # bump when the analysis changes, so cached results of an older one are not reused


@dataclass
class CorpusRuns:
    """The finished runs of one corpus: sizes, tokens, compute (6ND) and held-out loss."""

    name: str
    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    C: np.ndarray
    unique_tokens: float = 0.0  # tokens of the corpus's training set; 0 = unknown (no repetition term)
    keys: list[str] | None = None  # run keys shared across corpora (paired bootstrap); None = position

    def __post_init__(self) -> None:
        self.N, self.D, self.loss, self.C = (
            np.asarray(x, dtype=np.float64) for x in (self.N, self.D, self.loss, self.C)
        )
        self.keys = [str(i) for i in range(len(self.N))] if self.keys is None else [str(k) for k in self.keys]
        if len(set(self.keys)) != len(self.keys) or len(self.keys) != len(self.N):
            raise ValueError(f"{self.name}: run keys must be unique, one per run")

    def upto(self, max_c: float) -> CorpusRuns:
        keep = self.C <= max_c * (1 + 1e-9)
        keys = [k for k, kept in zip(self.keys, keep) if kept]
        return CorpusRuns(
            self.name, self.N[keep], self.D[keep], self.loss[keep], self.C[keep], self.unique_tokens, keys
        )


def _r_star(runs: CorpusRuns, r_star: float | None) -> float | None:
    return r_star if r_star is not None and runs.unique_tokens > 0 else None


def fit_data(runs: CorpusRuns, r_star: float | None) -> np.ndarray:
    """The D the law is fitted on: effective data D' under the repetition term, else D."""
    r = _r_star(runs, r_star)
    return runs.D if r is None else effective_data(runs.D, runs.unique_tokens, r)


def predict(fit: ParametricFit, C: float, unique_tokens: float = 0.0, r_star: float | None = None) -> float:
    """The best loss reachable at compute C: closed form, or with U unique tokens the minimum
    over N (a log grid of 4001 sizes, 10^+-4 around the unconstrained optimum) of L(N, D'(C/6N)).
    NaN for a degenerate law (a non-positive exponent or coefficient: no compute-optimal size)."""
    params = (fit.A, fit.B, fit.alpha, fit.beta)
    if not all(math.isfinite(p) and p > 0 for p in params) or not math.isfinite(fit.E):
        return float("nan")
    with np.errstate(all="ignore"):
        if r_star is None or unique_tokens <= 0 or not fit.d_opt(C) > unique_tokens:
            value = best_loss_at(fit, C)
            return value if math.isfinite(value) else float("nan")
        n0 = float(fit.n_opt(C))
        if not (math.isfinite(n0) and n0 > 0):
            return float("nan")
        n = np.geomspace(n0 * 1e-4, n0 * 1e4, 4001)
        losses = fit.loss(n, effective_data(C / (6.0 * n), unique_tokens, r_star))
        losses = losses[np.isfinite(losses)]
        return float(losses.min()) if len(losses) else float("nan")


def rank(predicted: dict[str, float]) -> list[str]:
    """Corpus names, lowest predicted loss first (non-finite last, ties by name)."""
    return sorted(predicted, key=lambda n: (not math.isfinite(predicted[n]), predicted[n], n))


def p_correct(samples: dict[str, np.ndarray], ranking: list[str]) -> float:
    """Share of joint resamples whose ranking equals `ranking` (a non-finite prediction is wrong)."""
    stacked = np.stack([np.asarray(samples[n], dtype=np.float64) for n in ranking])  # corpora x resamples
    if stacked.shape[1] == 0:
        return float("nan")
    finite = np.isfinite(stacked).all(axis=0)
    ordered = (np.diff(stacked, axis=0) > 0).all(axis=0) if len(ranking) > 1 else np.ones(stacked.shape[1], bool)
    return float((finite & ordered).mean())


def interval(values: np.ndarray, level: float) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return [float("nan"), float("nan")]
    return [float(np.percentile(v, (1 - level) / 2 * 100)), float(np.percentile(v, (1 + level) / 2 * 100))]


def bootstrap_predictions(
    corpora: list[CorpusRuns],
    fits: dict[str, ParametricFit],
    target: float,
    n_boot: int,
    seed: int = 0,
    r_star: float | None = MUENNIGHOFF_R_STAR_D,
    top_starts: int = BOOT_STARTS,
) -> dict[str, np.ndarray]:
    """Per corpus, `n_boot` predictions at `target` from fits to paired resamples of the runs:
    resample b draws keys from the union of the corpora's run keys (one stream, `seed`), and each
    corpus fits its runs with the drawn keys (a corpus holding fewer than MIN_RUNS of them: NaN)."""
    grid = init_grid()
    keys = sorted(set().union(*(r.keys for r in corpora)))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(keys), (n_boot, len(keys)))
    out = {}
    for runs in corpora:
        where = {k: i for i, k in enumerate(runs.keys)}
        position = np.array([where.get(k, -1) for k in keys])
        d = fit_data(runs, r_star)
        r = _r_star(runs, r_star)
        preds = np.full(n_boot, np.nan)
        for b in range(n_boot):
            idx = position[draws[b]]
            idx = idx[idx >= 0]
            if len(idx) < MIN_RUNS:
                continue
            try:
                f = refit_resample(runs.N[idx], d[idx], runs.loss[idx], fits[runs.name], top_starts, grid)
            except (FitError, ValueError, FloatingPointError):
                continue
            preds[b] = predict(f, target, runs.unique_tokens, r)
        out[runs.name] = preds
    return out


def law_from_fit(fit: dict, n_points: int = 0) -> ParametricFit:
    """The parametric law of a fit.json dict."""
    return ParametricFit(fit["E"], fit["A"], fit["B"], fit["alpha"], fit["beta"], fit["objective"], n_points)


def decide(
    corpora: list[CorpusRuns],
    target: float,
    n_boot: int,
    seed: int = 0,
    level: float = 0.95,
    top_k: int | None = 128,
    r_star: float | None = MUENNIGHOFF_R_STAR_D,
    full: bool = False,
    cache: dict | None = None,
) -> dict:
    """Point predictions, ranking, intervals and p_correct at `target` from these runs.
    `full=True` fits with `fit_all` (approach 2 and the repetition record too: fit.json) instead
    of the parametric fit alone. `cache` (a dict, kept by the caller across invocations) maps the
    exact inputs to the result, so a rerun on the same runs does not refit."""
    key = None
    if cache is not None:
        key = _cache_key(corpora, target, n_boot, seed, level, top_k, r_star, full)
        if key in cache:
            return cache[key]
    fits: dict[str, ParametricFit] = {}
    fit_json: dict[str, dict] = {}
    for runs in corpora:
        d = fit_data(runs, r_star)
        if full:
            r = _r_star(runs, r_star)
            U = np.full_like(runs.N, runs.unique_tokens)
            fit_json[runs.name] = fit_all(Points(runs.N, runs.D, runs.loss, runs.C, 0, U), top_k=top_k, repetition=r)
            fits[runs.name] = law_from_fit(fit_json[runs.name], len(runs.N))
        else:
            fits[runs.name] = fit_parametric(runs.N, d, runs.loss, top_k=top_k)
    predicted = {r.name: predict(fits[r.name], target, r.unique_tokens, _r_star(r, r_star)) for r in corpora}
    ranking = rank(predicted)
    samples = bootstrap_predictions(corpora, fits, target, n_boot, seed, r_star)
    out = {
        "ranking": ranking,
        "predicted_loss": predicted,
        "interval": {name: interval(samples[name], level) for name in predicted},
        "p_correct": p_correct(samples, ranking),
        "runs": {r.name: len(r.N) for r in corpora},
        "failed_resamples": {name: int((~np.isfinite(v)).sum()) for name, v in samples.items()},
        "fits": fit_json or {n: f.to_dict() for n, f in fits.items()},
    }
    out = _plain(out)
    if cache is not None:
        cache[key] = out
    return out


def _plain(value):
    """JSON-ready: numpy scalars -> float, complex (G of a law with a negative exponent) -> NaN."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, complex):
        return float("nan")
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value


def _cache_key(corpora: list[CorpusRuns], *settings) -> str:
    import hashlib
    import json

    data = [
        [r.name, r.keys, r.N.tolist(), r.D.tolist(), r.loss.tolist(), r.C.tolist(), r.unique_tokens] for r in corpora
    ]
    text = json.dumps([data, list(settings), BOOT_STARTS, MIN_RUNS, CACHE_VERSION])
    return hashlib.sha256(text.encode()).hexdigest()


def compute_levels(corpora: list[CorpusRuns]) -> list[float]:
    """The compute levels of the runs: the largest C of each isoFLOP group, ascending."""
    C = np.concatenate([r.C for r in corpora])
    labels = group_budgets(C)
    return sorted(float(C[labels == g].max()) for g in range(labels.max() + 1))


def stable_from(levels: list[dict], final: list[str]) -> float | None:
    """The smallest level from which every level's ranking equals `final` (None: not even the last)."""
    start = None
    for entry in reversed(levels):
        if entry.get("ranking") != final:
            break
        start = entry["max_flops"]
    return start


def analyse(
    corpora: list[CorpusRuns],
    target: float,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    top_k: int | None = 128,
    r_star: float | None = MUENNIGHOFF_R_STAR_D,
    cache: dict | None = None,
) -> dict:
    """The whole decision: the final one (every run) plus one per compute level and the stable point."""
    too_few = {r.name: len(r.N) for r in corpora if len(r.N) < MIN_RUNS}
    if too_few:
        raise FitError(
            "each corpus needs at least "
            f"{MIN_RUNS} finished runs for the fit; " + ", ".join(f"{n} has {k}" for n, k in sorted(too_few.items()))
        )
    final = dict(decide(corpora, target, n_boot, seed, level, top_k, r_star, full=True, cache=cache))
    levels = []
    compute = compute_levels(corpora)
    for c in compute[:-1]:
        subset = [r.upto(c) for r in corpora]
        entry: dict = {"max_flops": c, "runs": {r.name: len(r.N) for r in subset}}
        if min(len(r.N) for r in subset) >= MIN_RUNS:
            d = decide(subset, target, n_boot, seed, level, top_k, r_star, cache=cache)
            entry.update({k: d[k] for k in ("predicted_loss", "interval")})
            if all(math.isfinite(v) for v in d["predicted_loss"].values()):
                entry.update(ranking=d["ranking"], p_correct=d["p_correct"])
            else:  # a degenerate law (e.g. a negative exponent) predicts nothing: no decision here
                entry["note"] = "a fit predicts no finite loss"
        levels.append(entry)
    levels.append(
        {"max_flops": compute[-1]}
        | {k: final[k] for k in ("runs", "ranking", "predicted_loss", "interval", "p_correct")}
    )
    final["by_compute"] = levels
    finite = all(math.isfinite(v) for v in final["predicted_loss"].values())
    final["stable_from_flops"] = stable_from(levels, final["ranking"]) if finite else None
    return final
