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
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                continue  # try the next member; the error below names the whole union
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


def read_yaml(path: str | Path, follow_base: bool = True) -> dict:
    """The mapping in a YAML config file; `base: other.yaml` merged underneath unless `follow_base`
    is False (then only what this file itself sets)."""
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
    if base and follow_base:
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


# ------------------------------------------------------------------------------------------------
# Help for every key: `anvil train CONFIG --help-config` (and `data run`, `sweep plan`) print it.


def field_help(cls: type) -> dict[str, str]:
    """Field name -> one-line help: `field(metadata={"help": ...})`, else the first comment inside
    the field's statement in the class body (`lr: float = 1e-3  # peak learning rate`; a statement the
    formatter wrapped over several lines counts whole), so the help sits next to the default it
    explains. Fields inherited from a parent dataclass keep the parent's help."""
    import inspect
    import io
    import textwrap
    import tokenize

    helps: dict[str, str] = {}
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        source = ""
    names = {f.name for f in dataclasses.fields(cls)}
    current, depth = None, 0  # the field whose statement is being read (it may wrap over lines)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        elif tok.type == tokenize.NAME and depth == 0 and current is None and tok.start[1] == 4:
            current = tok.string if tok.string in names else None  # a statement of the class body
        elif tok.type == tokenize.COMMENT and current is not None:
            helps.setdefault(current, tok.string.lstrip("#").strip())
        elif tok.type == tokenize.NEWLINE and depth == 0:
            current = None
    for base in cls.__mro__[1:]:  # fields inherited from a parent dataclass keep its comments
        if dataclasses.is_dataclass(base):
            for name, text in field_help(base).items():
                helps.setdefault(name, text)
    for f in dataclasses.fields(cls):
        if f.metadata.get("help"):
            helps[f.name] = f.metadata["help"]
    return helps


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, help) for every leaf key of dataclass `cls`, nested sections
    flattened in declaration order."""
    rows = []
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, key + "."))
            continue
        default = to_dict(_default(f))
        rows.append(
            (
                key,
                _type_name(tp),
                yaml.safe_dump(default, default_flow_style=True, width=10**6)
                .strip()
                .removesuffix("\n...")
                .removesuffix("..."),
                helps.get(f.name, ""),
            )
        )
    return rows


def format_help(rows: list[tuple[str, str, str, str]]) -> str:
    """One line per key: the dotted key first, then its type, default and help."""
    width = max((len(r[0]) for r in rows), default=0)
    lines = (f"{key:<{width}}  {tp}  default: {default}  - {text}".rstrip(" -") for key, tp, default, text in rows)
    return "\n".join(lines)
