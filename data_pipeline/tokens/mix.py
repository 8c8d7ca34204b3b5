"""Token-budget mixing: `anvil data mix` plans a blend of tokenized sources; `data.mix` reads it back.

A mix is target shares of the training tokens per source plus a total budget. Counting each
source's tokens (from its `PREFIX.idx`, no pass over `.bin`) tells how often the trainer will
repeat it: epochs = budget x share / tokens available. Muennighoff et al. (2023, "Scaling
Data-Constrained Language Models") find that up to ~4 epochs of repeated data are worth almost as
much as fresh data and that returns fall off quickly after that, so a plan past `max_epochs`
(default 4) is refused and one within a quarter of it draws a warning.

The plan is written as the YAML fragment the trainer reads, `{data: {paths: [...], weights:
[...]}}`. The trainer's blend (megatron-core's BlendedDataset) draws *samples* in proportion to
the weights and every sample holds `seq_len + 1` packed tokens, so sample shares are token shares.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from framework.data.mix import MixError, read_mix  # noqa: F401 - re-exported for `anvil data mix`

DEFAULT_MAX_EPOCHS = 4.0
WARN_FRACTION = 0.75  # warn when a source repeats more than 3/4 of max_epochs
_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


@dataclass(frozen=True)
class Source:
    name: str
    prefix: str
    weight: float


@dataclass(frozen=True)
class Row:
    name: str
    prefix: str
    share: float
    available: int
    drawn: int
    epochs: float


def parse_source(spec: str) -> Source:
    """`NAME=PREFIX:WEIGHT` (the weight after the last colon, so PREFIX may contain colons)."""
    name, eq, rest = spec.partition("=")
    prefix, colon, weight = rest.rpartition(":")
    if not eq or not colon or not name.strip() or not prefix:
        raise MixError(f"--source {spec!r}: expected NAME=PREFIX:WEIGHT, e.g. web=tokens/web:3")
    try:
        value = float(weight)
    except ValueError:
        raise MixError(f"--source {spec!r}: weight {weight!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise MixError(f"--source {spec!r}: weight must be positive, got {weight}")
    from framework.data.shards import strip_prefix

    return Source(name.strip(), strip_prefix(prefix), value)


def parse_tokens(text: str) -> int:
    """`1000000`, `1e6`, `500M`, `2B`, `1.5T` -> a positive token count."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMBGT]?)\s*", str(text).upper())
    try:
        value = float(m.group(1)) * _SUFFIX[m.group(2)] if m else float("nan")
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 1:
        raise MixError(f"--tokens {text!r}: expected a positive token count such as 2000000, 2e9 or 2B")
    return round(value)


def plan_mix(sources: list[Source], total_tokens: int) -> list[Row]:
    """One row per source: its share of `total_tokens`, tokens available and drawn, epochs."""
    from framework.data.shards import PrefixError, inspect_prefix

    if not sources:
        raise MixError("no sources: give at least one --source NAME=PREFIX:WEIGHT")
    seen: dict[str, str] = {}
    for s in sources:
        if s.name in seen:
            raise MixError(f"--source: the name {s.name!r} is given twice")
        seen[s.name] = s.prefix
    total_weight = sum(s.weight for s in sources)
    rows = []
    for s in sources:
        try:
            available = inspect_prefix(s.prefix).tokens
        except PrefixError as exc:
            raise MixError(f"--source {s.name}: {exc}") from None
        share = s.weight / total_weight
        drawn = round(total_tokens * share)
        rows.append(Row(s.name, s.prefix, share, available, drawn, drawn / available))
    return rows


def check_epochs(rows: list[Row], max_epochs: float) -> list[str]:
    """Raise MixError when a source repeats more than `max_epochs`; return warnings for close ones."""
    over = [r for r in rows if r.epochs > max_epochs]
    if over:
        fits = min(int(max_epochs * r.available / r.share) for r in rows)
        worst = max(over, key=lambda r: r.epochs)
        raise MixError(
            f"source {worst.name!r} would be repeated {worst.epochs:.2f} epochs ({worst.drawn:,} of "
            f"{worst.available:,} tokens), past --max-epochs {max_epochs:g}: repeated data is worth "
            f"little after ~4 epochs (Muennighoff et al. 2023). Lower --tokens to at most {fits:,}, "
            f"lower its weight, add data, or raise --max-epochs"
        )
    return [
        f"source {r.name!r} repeats {r.epochs:.2f} epochs, close to --max-epochs {max_epochs:g}"
        for r in rows
        if r.epochs > WARN_FRACTION * max_epochs
    ]


def write_mix(rows: list[Row], total_tokens: int, output: str | Path) -> None:
    """Write the `{data: {paths, weights}}` fragment (absolute paths), with the plan as comments."""
    data = {"data": {"paths": [os.path.abspath(r.prefix) for r in rows], "weights": [round(r.share, 10) for r in rows]}}
    lines = [
        f"# anvil data mix: {total_tokens:,} tokens",
        *(
            f"#   {r.name}: {r.share:.4f} of the budget, {r.drawn:,} of {r.available:,} tokens, {r.epochs:.2f} epochs"
            for r in rows
        ),
        "# Train on it: anvil train CONFIG.yaml data.mix=THIS_FILE",
    ]
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n" + yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, out)
