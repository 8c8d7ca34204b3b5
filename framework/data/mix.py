"""Reading a blend fragment (`data.mix`): `{data: {paths: [...], weights: [...]}}` as `anvil data mix`
writes it (data_pipeline/tokens/mix.py plans and writes; the trainer only reads)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


class MixError(ValueError):
    """A mix that cannot be planned or read; the message names the flag, source or file."""


def read_mix(path: str | Path) -> tuple[list[str], list[float]]:
    """(paths, weights) of a mix fragment; relative paths are taken from the fragment's folder."""
    path = Path(path)
    where = f"{path}"
    if not path.is_file():
        raise MixError(f"{where}: file not found (write one with `anvil data mix`)")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MixError(f"{where}: not valid YAML ({exc})") from None
    data = doc.get("data") if isinstance(doc, dict) and set(doc) == {"data"} else None
    if not isinstance(data, dict) or set(data) - {"paths", "weights"} or "paths" not in data:
        raise MixError(f"{where}: expected {{data: {{paths: [...], weights: [...]}}}} and nothing else")
    paths, weights = data["paths"], data.get("weights") or []
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise MixError(f"{where}: data.paths must be a non-empty list of tokenized prefixes")
    if not isinstance(weights, list) or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights
    ):
        raise MixError(f"{where}: data.weights must be a list of numbers >= 0")
    if weights and len(weights) != len(paths):
        raise MixError(f"{where}: {len(weights)} data.weights for {len(paths)} data.paths")
    return [p if os.path.isabs(p) else str(path.parent / p) for p in paths], [float(w) for w in weights]
