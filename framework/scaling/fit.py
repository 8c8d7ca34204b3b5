"""Scaling-law fits the way the papers did them, and checked against their numbers.

Approach 3 (Hoffmann et al. 2022, as replicated by Besiroglu et al. 2024, arXiv:2404.10102):
L(N, D) = E + A/N^alpha + B/D^beta, fitted as the log-sum-exp
    log L ~ LSE(a - alpha log N, b - beta log D, e),   A = e^a, B = e^b, E = e^e,
by minimising the summed Huber loss (delta = 1e-3) of the residuals with L-BFGS-B from every point
of Hoffmann's initialisation grid, keeping the best objective. Single starts routinely stop at ten
times the best objective, so the grid is the point, not a nicety. The closed-form compute-optimal
allocation under C = 6ND: N_opt(C) = G (C/6)^a, D_opt(C) = (C/6)^b / G with
a = beta/(alpha+beta), b = alpha/(alpha+beta), G = (alpha A / (beta B))^(1/(alpha+beta)).

Approach 2 (isoFLOP profiles): per compute budget a parabola of loss in log N (or log D); its
vertex is the compute-optimal size; a straight line through log(vertex) vs log C gives the power
laws N_opt(C) = k_N C^a and D_opt(C) = k_D C^b.

Data-constrained runs (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models",
arXiv:2305.16264, eq. 5): a run that sees its U unique tokens for more than one epoch gets less
from the repeats, so with `repetition` the fit uses the effective data
    D' = U + U R* (1 - exp(-R / R*)),   R = D / U - 1 (repetitions beyond the first epoch),
and D' = D when D <= U. R* = 15.4 is the paper's fitted R*_D (repeated tokens lose value with a
1/e "half-life" of about 15 repetitions); it is a fixed constant here, not refitted. The parameter
side of that paper (excess parameters, R*_N) is not applied.

Everything here is deterministic: a fixed grid, a fixed optimiser, seeded bootstrap resamples.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

HUBER_DELTA = 1e-3
MUENNIGHOFF_R_STAR_D = 15.4  # arXiv:2305.16264, fitted R*_D
# Hoffmann et al.'s initialisation grid (Epoch's replication uses the same): 5 x 5 x 5 x 6 x 6 = 4500.
GRID_ALPHA = tuple(np.arange(0.0, 2.01, 0.5))
GRID_BETA = tuple(np.arange(0.0, 2.01, 0.5))
GRID_E = tuple(np.arange(-1.0, 1.01, 0.5))
GRID_A = tuple(np.arange(0.0, 25.1, 5.0))
GRID_B = tuple(np.arange(0.0, 25.1, 5.0))


class FitError(ValueError):
    """Bad input to a fit: too few points, non-positive values, a malformed results file."""


# ---------------------------------------------------------------------------------------------
# Reading results
# ---------------------------------------------------------------------------------------------
@dataclass
class Points:
    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    C: np.ndarray  # compute budget of each point (a `C` column if given, else 6 N D)
    skipped: int = 0  # rows that could not be used (missing / non-numeric / non-positive)
    U: np.ndarray | None = None  # unique tokens of each run's corpus (`unique_tokens`); 0 = unknown


def finite_or_null(value):
    """NaN/inf (e.g. approach-2 laws when fewer than two budgets have a minimum) become JSON null,
    in nested dicts and lists: fit.json and ladder.json stay strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def effective_data(D, U, r_star: float = MUENNIGHOFF_R_STAR_D) -> np.ndarray:
    """Muennighoff et al.'s D' = U + U R* (1 - exp(-R/R*)), R = D/U - 1; D where D <= U or U unknown (0)."""
    D, U = np.asarray(D, dtype=np.float64), np.broadcast_to(np.asarray(U, dtype=np.float64), np.shape(D))
    if r_star <= 0:
        raise FitError(f"R* must be positive, got {r_star}")
    out = D.copy()
    rep = (U > 0) & (D > U)
    R = D[rep] / U[rep] - 1.0
    out[rep] = U[rep] + U[rep] * r_star * (1.0 - np.exp(-R / r_star))
    return out


def read_results(path: str | Path) -> Points:
    """Read a RESULTS.csv (columns N, D, loss; optional C; others ignored). Bad rows are skipped
    and counted; a file without the required columns or without usable rows is an error."""
    path = Path(path)
    if not path.is_file():
        raise FitError(f"results file not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(line for line in fh if not line.startswith("#"))
        header = reader.fieldnames or []
        missing = [c for c in ("N", "D", "loss") if c not in header]
        if missing:
            raise FitError(
                f"{path}: missing column(s) {', '.join(missing)}; expected at least N, D, loss "
                f"(found {', '.join(header) or 'no header'})"
            )
        rows, skipped = [], 0
        for row in reader:
            try:
                n, d, loss = float(row["N"]), float(row["D"]), float(row["loss"])
                c = float(row["C"]) if row.get("C") not in (None, "") else 6.0 * n * d
                u = float(row["unique_tokens"]) if row.get("unique_tokens") not in (None, "") else 0.0
            except (TypeError, ValueError):
                skipped += 1
                continue
            if not all(math.isfinite(v) and v > 0 for v in (n, d, loss, c)) or not (math.isfinite(u) and u >= 0):
                skipped += 1
                continue
            rows.append((n, d, loss, c, u))
    if not rows:
        raise FitError(f"{path}: no usable rows (N, D, loss must be positive numbers; {skipped} skipped)")
    arr = np.array(rows, dtype=np.float64)
    return Points(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], skipped, arr[:, 4])


# ---------------------------------------------------------------------------------------------
# Approach 3: the parametric fit
# ---------------------------------------------------------------------------------------------
@dataclass
class ParametricFit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    n_points: int
    n_starts: int = 0
    converged_starts: int = 0

    @property
    def a(self) -> float:
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        # NaN, not a complex number, for a degenerate fit (a bootstrap resample can give a
        # negative exponent): the compute-optimal split does not exist there.
        denominator, exponent_sum = self.beta * self.B, self.alpha + self.beta
        base = self.alpha * self.A / denominator if denominator else math.nan
        if not (base > 0 and exponent_sum):
            return math.nan
        return float(base ** (1.0 / exponent_sum))

    def loss(self, N, D):
        return self.E + self.A / np.asarray(N, float) ** self.alpha + self.B / np.asarray(D, float) ** self.beta

    def n_opt(self, C):
        return self.G * (np.asarray(C, float) / 6.0) ** self.a

    def d_opt(self, C):
        return (np.asarray(C, float) / 6.0) ** self.b / self.G

    def to_dict(self) -> dict:
        return {
            "E": self.E,
            "A": self.A,
            "B": self.B,
            "alpha": self.alpha,
            "beta": self.beta,
            "a": self.a,
            "b": self.b,
            "G": self.G,
            "objective": self.objective,
            "n_points": self.n_points,
            "n_starts": self.n_starts,
            "converged_starts": self.converged_starts,
        }


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def huber_objective(
    theta: np.ndarray,
    logN: np.ndarray,
    logD: np.ndarray,
    logL: np.ndarray,
    delta: float = HUBER_DELTA,
    _M: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Summed Huber loss of LSE(a - alpha logN, b - beta logD, e) - log L and its gradient.
    theta = (a, b, e, alpha, beta); `_M` = columns (1, logN, logD), precomputed by the caller."""
    a, b, e, alpha, beta = theta
    T = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])
    m = T.max(axis=0)
    W = np.exp(T - m)
    s = W.sum(axis=0)
    r = m + np.log(s) - logL
    g = np.clip(r, -delta, delta)  # d huber / d r; huber(r) = g (r - g/2) in both regimes
    if _M is None:
        _M = np.stack([np.ones_like(logN), logN, logD], axis=1)
    Q = (W * (g / s)) @ _M  # rows: the three terms' softmax weights x (1, logN, logD)
    grad = np.array([Q[0, 0], Q[1, 0], Q[2, 0], -Q[0, 1], -Q[1, 2]])
    return float(np.dot(g, r - 0.5 * g)), grad


def init_grid() -> np.ndarray:
    """Hoffmann's grid as rows (a, b, e, alpha, beta)."""
    return np.array(list(itertools.product(GRID_A, GRID_B, GRID_E, GRID_ALPHA, GRID_BETA)), dtype=np.float64)


def grid_objectives(starts: np.ndarray, logN, logD, logL, delta: float = HUBER_DELTA) -> np.ndarray:
    """The objective at every start at once (starts x points, vectorised)."""
    a, b, e, alpha, beta = (starts[:, i : i + 1] for i in range(5))
    t = np.stack([a - alpha * logN[None], b - beta * logD[None], np.broadcast_to(e, (len(starts), len(logN)))])
    lse = np.logaddexp.reduce(t, axis=0)
    return _huber(lse - logL[None], delta).sum(axis=1)


def _one_thread():
    """BLAS threads fight each other inside thousands of tiny L-BFGS-B calls on a busy machine
    (measured 70x slower with 2 cores under load); the fit is single-threaded by nature."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except ImportError:  # pragma: no cover - shipped with scikit-learn
        import contextlib

        return contextlib.nullcontext()


def fit_parametric(
    N,
    D,
    loss,
    starts: np.ndarray | None = None,
    top_k: int | None = 128,
    delta: float = HUBER_DELTA,
    maxiter: int = 1000,
) -> ParametricFit:
    """L-BFGS-B from the initialisation grid (default: Hoffmann's 4500 starts), best objective kept.

    The objective of every grid point is computed in one vectorised pass and L-BFGS-B runs from the
    `top_k` best of them (`top_k=None`: from every start, as Hoffmann and Epoch did). On Epoch's
    240 points the 10 best-ranked starts already reach the full grid's optimum (1.018274e-3, the
    same to 1e-17) while one start in ~50 does overall; the full grid costs ~25 ms per start.
    Ties are broken by grid order, so the result is deterministic.
    """
    N, D, loss = (np.asarray(x, dtype=np.float64) for x in (N, D, loss))
    if len(N) < 5:
        raise FitError(f"the parametric fit has 5 free parameters and needs at least 5 points, got {len(N)}")
    if np.any(N <= 0) or np.any(D <= 0) or np.any(loss <= 0):
        raise FitError("N, D and loss must all be positive")
    logN, logD, logL = np.log(N), np.log(D), np.log(loss)
    starts = init_grid() if starts is None else np.atleast_2d(np.asarray(starts, dtype=np.float64))
    if top_k is not None and top_k < len(starts):
        starts = starts[np.sort(np.argsort(grid_objectives(starts, logN, logD, logL, delta), kind="stable")[:top_k])]
    M = np.stack([np.ones_like(logN), logN, logD], axis=1)
    best_x, best_f, converged = None, math.inf, 0
    # ftol/gtol are tight because the objective is tiny (~1e-3) and scipy's ftol is relative to
    # max(|f|, 1): the defaults stop early, which is what Epoch found in the published fit.
    options = {"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 20}
    with _one_thread():
        for x0 in starts:
            res = minimize(
                huber_objective, x0, args=(logN, logD, logL, delta, M), jac=True, method="L-BFGS-B", options=options
            )
            converged += bool(res.success)
            if np.isfinite(res.fun) and res.fun < best_f:
                best_f, best_x = float(res.fun), res.x
    if best_x is None:
        raise FitError("no start of the initialisation grid produced a finite objective")
    a, b, e, alpha, beta = best_x
    return ParametricFit(
        E=float(np.exp(e)),
        A=float(np.exp(a)),
        B=float(np.exp(b)),
        alpha=float(alpha),
        beta=float(beta),
        objective=best_f,
        n_points=len(N),
        n_starts=len(starts),
        converged_starts=converged,
    )


def parametric_objective(fit: dict | ParametricFit, N, D, loss, delta: float = HUBER_DELTA) -> float:
    """The summed Huber objective of given parameters (e.g. a paper's published ones) on points."""
    p = fit.to_dict() if isinstance(fit, ParametricFit) else fit
    theta = np.array([math.log(p["A"]), math.log(p["B"]), math.log(p["E"]), p["alpha"], p["beta"]])
    return huber_objective(
        theta, np.log(np.asarray(N, float)), np.log(np.asarray(D, float)), np.log(np.asarray(loss, float)), delta
    )[0]


def refit_resample(
    N, D, loss, best: ParametricFit, top_starts: int = 8, grid: np.ndarray | None = None
) -> ParametricFit:
    """The fit of one bootstrap resample: L-BFGS-B from the full-data optimum `best` plus the
    `top_starts` grid points with the lowest objective on the resample (shared by
    `bootstrap_parametric` and `anvil ladder`'s bootstrap over runs)."""
    grid = init_grid() if grid is None else grid
    logN, logD, logL = np.log(N), np.log(D), np.log(loss)
    # E (or A, B) may have underflowed to 0.0: start from the smallest positive value instead
    best_theta = np.array([[math.log(max(v, 1e-300)) for v in (best.A, best.B, best.E)] + [best.alpha, best.beta]])
    obj = grid_objectives(grid, logN, logD, logL)
    starts = np.concatenate([best_theta, grid[np.sort(np.argsort(obj, kind="stable")[:top_starts])]])
    with np.errstate(over="ignore"):  # a degenerate resample may send A or B to inf: it widens the CI
        return fit_parametric(N, D, loss, starts=starts, top_k=None)


def bootstrap_parametric(
    N, D, loss, best: ParametricFit, n_boot: int, seed: int = 0, top_starts: int = 8, level: float = 0.95
) -> dict:
    """Percentile confidence intervals from `n_boot` resamples (with replacement) of the points.

    Each resample starts from the full-data optimum plus the `top_starts` grid points with the
    lowest objective on that resample (ranked in one vectorised pass).
    """
    N, D, loss = (np.asarray(x, dtype=np.float64) for x in (N, D, loss))
    rng = np.random.default_rng(seed)
    grid = init_grid()
    names = ("E", "A", "B", "alpha", "beta", "a", "b", "G")
    samples: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(n_boot):
        idx = rng.integers(0, len(N), len(N))
        f = refit_resample(N[idx], D[idx], loss[idx], best, top_starts, grid)
        for k in names:
            samples[k].append(float(getattr(f, k)))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: [float(np.percentile(v, lo)), float(np.percentile(v, hi))] for k, v in samples.items()} | {
        "level": level,
        "n_boot": n_boot,
        "seed": seed,
    }


# ---------------------------------------------------------------------------------------------
# Approach 2: isoFLOP profiles
# ---------------------------------------------------------------------------------------------
def group_budgets(C: np.ndarray, rtol: float = 0.05) -> np.ndarray:
    """Label points whose budgets agree within `rtol` (relative) as one isoFLOP group."""
    C = np.asarray(C, float)
    order = np.argsort(C, kind="stable")
    labels = np.empty(len(C), dtype=int)
    label, anchor = -1, None
    for i in order:
        if anchor is None or C[i] > anchor * (1 + rtol):
            label, anchor = label + 1, C[i]
        labels[i] = label
    return labels


@dataclass
class IsoFlopFit:
    variable: str  # "N" or "D": the axis the parabolas were fitted in
    budgets: list[dict] = field(default_factory=list)  # per budget: C, optimum N and D, loss there
    n_exponent: float = float("nan")  # N_opt(C) = n_coef * C^n_exponent
    n_coef: float = float("nan")
    d_exponent: float = float("nan")  # D_opt(C) = d_coef * C^d_exponent
    d_coef: float = float("nan")
    skipped_budgets: int = 0

    def n_opt(self, C):
        return self.n_coef * np.asarray(C, float) ** self.n_exponent

    def d_opt(self, C):
        return self.d_coef * np.asarray(C, float) ** self.d_exponent

    def to_dict(self) -> dict:
        return {
            "variable": self.variable,
            "N_opt": {"coef": self.n_coef, "exponent": self.n_exponent},
            "D_opt": {"coef": self.d_coef, "exponent": self.d_exponent},
            "budgets": self.budgets,
            "skipped_budgets": self.skipped_budgets,
            "law": "N_opt(C) = coef * C^exponent, D_opt(C) = coef * C^exponent, C in FLOPs",
        }


def fit_isoflop(C, N=None, D=None, loss=None, variable: str = "N", rtol: float = 0.05) -> IsoFlopFit:
    """Approach 2. Give C and loss plus N or D (the other follows from C = 6 N D)."""
    C, loss = np.asarray(C, float), np.asarray(loss, float)
    if N is None and D is None:
        raise FitError("fit_isoflop needs N or D")
    N = np.asarray(N, float) if N is not None else C / (6 * np.asarray(D, float))
    D = np.asarray(D, float) if D is not None else C / (6 * N)
    x_all = np.log(N if variable == "N" else D)
    labels = group_budgets(C, rtol)
    out = IsoFlopFit(variable=variable)
    for g in range(labels.max() + 1):
        sel = labels == g
        x, y = x_all[sel], loss[sel]
        if len(np.unique(x)) < 3:
            out.skipped_budgets += 1
            continue
        c2, c1, c0 = np.polyfit(x, y, 2)
        vertex = -c1 / (2 * c2)
        # A parabola that opens downwards, or a vertex outside the sampled sizes, is no optimum.
        if c2 <= 0 or not (x.min() <= vertex <= x.max()):
            out.skipped_budgets += 1
            continue
        c = float(np.exp(np.mean(np.log(C[sel]))))
        opt = float(np.exp(vertex))
        n_opt, d_opt = (opt, c / (6 * opt)) if variable == "N" else (c / (6 * opt), opt)
        out.budgets.append(
            {
                "C": c,
                "N_opt": n_opt,
                "D_opt": d_opt,
                "loss_opt": float(c0 + c1 * vertex + c2 * vertex**2),
                "points": int(sel.sum()),
            }
        )
    if len(out.budgets) >= 2:
        lc = np.log([b["C"] for b in out.budgets])
        out.n_exponent, ln = np.polyfit(lc, np.log([b["N_opt"] for b in out.budgets]), 1)
        out.d_exponent, ld = np.polyfit(lc, np.log([b["D_opt"] for b in out.budgets]), 1)
        out.n_exponent, out.d_exponent = float(out.n_exponent), float(out.d_exponent)
        out.n_coef, out.d_coef = float(np.exp(ln)), float(np.exp(ld))
    return out


# ---------------------------------------------------------------------------------------------
# Everything `anvil sweep fit` writes
# ---------------------------------------------------------------------------------------------
def with_repetition(
    points: Points, r_star: float = MUENNIGHOFF_R_STAR_D, unique_tokens: float | None = None
) -> tuple[Points, dict]:
    """Points with D replaced by Muennighoff's effective data D' (C and the raw D kept aside).
    `unique_tokens` fills rows without a count (0 in the `unique_tokens` column)."""
    U = np.zeros_like(points.D) if points.U is None else points.U.copy()
    if unique_tokens is not None:
        if unique_tokens <= 0:
            raise FitError(f"--unique-tokens must be positive, got {unique_tokens}")
        U[U <= 0] = unique_tokens
    if not np.any(U > 0):
        raise FitError(
            "the repetition term needs each run's unique-token count: a unique_tokens column "
            "(grid.unique_tokens in the sweep config) or --unique-tokens U"
        )
    D_eff = effective_data(points.D, U, r_star)
    repeated = (U > 0) & (points.D > U)
    info = {
        "form": "D' = U + U R* (1 - exp(-(D/U - 1)/R*)) for D > U (Muennighoff et al. 2023, arXiv:2305.16264)",
        "R_star": r_star,
        "rows_repeated": int(repeated.sum()),
        "rows_without_unique_tokens": int((U <= 0).sum()),
        "max_epochs": float((points.D / np.where(U > 0, U, np.inf)).max()),
    }
    return Points(points.N, D_eff, points.loss, points.C, points.skipped, U), info


def fit_all(
    points: Points,
    bootstrap: int = 0,
    seed: int = 0,
    top_k: int | None = 128,
    heldout: bool = False,
    repetition: float | None = None,
    unique_tokens: float | None = None,
) -> dict:
    """fit.json: the contract's fields at top level, then the objective, CIs and approach 2.
    `repetition` (R*, e.g. MUENNIGHOFF_R_STAR_D) fits on the effective data D' instead of D."""
    rep_info = None
    if repetition is not None:
        points, rep_info = with_repetition(points, repetition, unique_tokens)
    fit = fit_parametric(points.N, points.D, points.loss, top_k=top_k)
    out = fit.to_dict()
    if rep_info is not None:
        out["repetition"] = rep_info
    out["form"] = "L(N, D) = E + A/N^alpha + B/D^beta; N_opt(C) = G (C/6)^a; D_opt(C) = (C/6)^b / G"
    out["fitter"] = {
        "method": "L-BFGS-B",
        "loss": "huber",
        "delta": HUBER_DELTA,
        "on": "log-sum-exp residuals of log L",
        "starts": "Hoffmann grid (4500)" + ("" if top_k is None else f", best {top_k} by initial objective"),
    }
    out["skipped_rows"] = points.skipped
    if bootstrap > 0:
        out["ci"] = bootstrap_parametric(points.N, points.D, points.loss, fit, bootstrap, seed=seed)
    iso_n = fit_isoflop(points.C, N=points.N, loss=points.loss, variable="N")
    iso_d = fit_isoflop(points.C, D=points.D, loss=points.loss, variable="D")
    out["approach2"] = {"parabola_in_log_N": iso_n.to_dict(), "parabola_in_log_D": iso_d.to_dict()}
    if heldout:
        out["heldout"] = heldout_check(points, top_k=top_k, bootstrap=bootstrap, seed=seed)
    return out


def best_loss_at(fit: ParametricFit, C: float) -> float:
    """The loss the parametric law predicts for the compute-optimal model at budget C."""
    return float(fit.loss(fit.n_opt(C), fit.d_opt(C)))


def heldout_check(
    points: Points, top_k: int | None = 128, bootstrap: int = 0, seed: int = 0, level: float = 0.95
) -> dict:
    """Fit on every budget but the largest; compare the predicted compute-optimal loss there with
    the best loss observed at that budget (and with its isoFLOP parabola's minimum, if any).
    `bootstrap` > 0 adds the percentile interval of the prediction over resamples of the fit points
    (`predicted_interval`) and whether the observed best loss lies inside it."""
    labels = group_budgets(points.C)
    last = labels == labels.max()
    if labels.max() < 2 or (~last).sum() < 5:
        raise FitError("the held-out check needs at least 3 budgets and 5 points outside the largest")
    fit = fit_parametric(points.N[~last], points.D[~last], points.loss[~last], top_k=top_k)
    C = float(np.exp(np.mean(np.log(points.C[last]))))
    predicted = best_loss_at(fit, C)
    observed = float(points.loss[last].min())
    out = {
        "budget": C,
        "fit_points": int((~last).sum()),
        "predicted_best_loss": predicted,
        "observed_best_loss": observed,
        "relative_error": abs(predicted - observed) / observed,
        "fit": {k: fit.to_dict()[k] for k in ("E", "A", "B", "alpha", "beta", "a", "objective")},
    }
    if bootstrap > 0:
        out |= _heldout_interval(points, ~last, fit, C, observed, bootstrap, seed, level)
    iso = fit_isoflop(points.C[last], N=points.N[last], loss=points.loss[last])
    if iso.budgets:
        out["parabola_best_loss"] = iso.budgets[0]["loss_opt"]
        out["relative_error_vs_parabola"] = abs(predicted - out["parabola_best_loss"]) / out["parabola_best_loss"]
    return out


def _heldout_interval(
    points: Points, sel: np.ndarray, fit: ParametricFit, C: float, observed: float, n_boot: int, seed: int, level: float
) -> dict:
    """Percentile interval of the held-out prediction (and of E) over `n_boot` resamples of the
    fit points, each refitted as `bootstrap_parametric` refits (seeded: deterministic)."""
    N, D, loss = points.N[sel], points.D[sel], points.loss[sel]
    rng, grid = np.random.default_rng(seed), init_grid()
    preds, es = [], []
    for _ in range(n_boot):
        idx = rng.integers(0, len(N), len(N))
        f = refit_resample(N[idx], D[idx], loss[idx], fit, grid=grid)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value = best_loss_at(f, C)
        preds.append(value if math.isfinite(value) else math.inf)
        es.append(f.E)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    # A resample without a compute-optimal split predicts +inf: the bounds are order statistics
    # (no interpolation, which would turn inf - inf into NaN), so the upper one is +inf if the
    # upper tail holds such resamples - an open interval, not a number made up.
    interval = [float(np.percentile(preds, lo, method="lower")), float(np.percentile(preds, hi, method="higher"))]
    return {
        "predicted_interval": interval,
        "n_boot_degenerate": int(sum(not math.isfinite(p) for p in preds)),
        "observed_in_interval": bool(interval[0] <= observed <= interval[1]),
        "E_interval": [float(np.percentile(es, lo)), float(np.percentile(es, hi))],
        "interval_level": level,
        "n_boot": n_boot,
    }
