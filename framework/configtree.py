"""Typed configuration trees: dataclasses filled from YAML plus `key=value` overrides.

Every component of Anvil (training, curation, sweeps) describes its settings as a dataclass with
defaults; this module is the one place that turns YAML files and command-line overrides into those
dataclasses, and that rejects unknown keys and wrong types with the dotted path of the key, the
closest valid name and the expected type. No eval: override values are parsed as YAML scalars.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem, always naming the offending key (dotted path) and what was expected."""


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _unknown_key(path: str, key: str, valid: list[str]) -> ConfigError:
    full = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(f"unknown config key '{full}'{hint}")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where it is lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key '{path}': expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config key '{path}': expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{path}': expected a mapping for {tp.__name__}, got {value!r}")
        return build(tp, value, path)
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and args:
            value = [value]  # a single value where a list is expected: `data.paths=foo`
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{path}': expected a list, got {value!r}")
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{path}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # YAML reads "3e-4" (no dot) as a string
                except ValueError:
                    pass
            raise ConfigError(f"config key '{path}': expected float, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)  # 1e6 -> 1000000
            if isinstance(value, str):
                try:
                    f = float(value)
                    if f.is_integer():
                        return int(f)
                except ValueError:
                    pass
            raise ConfigError(f"config key '{path}': expected int, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{path}': expected bool (true/false), got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key '{path}': expected str, got {value!r}")
        return str(value)
    return value


def build(cls: type[T], data: dict | None, path: str = "") -> T:
    """Build dataclass `cls` from a (possibly partial) mapping, defaults filling the rest."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(path, str(key), list(fields))
        sub = f"{path}.{key}" if path else key
        kwargs[key] = _coerce(value, hints[key], sub)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"config section '{path or cls.__name__}': {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def parse_overrides(overrides: list[str]) -> dict:
    """`["a.b=3", "c=[1,2]"]` -> nested dict. Values are YAML scalars/flow collections."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"bad override '{item}': expected key=value (e.g. train.lr=3e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"bad override '{item}': empty key component")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"bad override '{item}': value is not valid YAML ({exc.problem})") from None
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"bad override '{item}': '{part}' is both a value and a section")
        node[parts[-1]] = value
    return tree


def merge(base: dict, extra: dict) -> dict:
    """Deep-merge `extra` into a copy of `base` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    # `base: other.yaml` composes configs (paths relative to this file); later keys win.
    base = data.pop("base", None)
    if base:
        data = merge(read_yaml(path.parent / base), data)
    return data


def load(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    data = read_yaml(path) if path else {}
    data = merge(data, parse_overrides(overrides or []))
    return build(cls, data)


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)
