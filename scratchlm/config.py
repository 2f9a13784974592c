"""Typed configs: dataclasses <-> TOML files <-> `--set key=value` overrides, validated.

Every stage owns a dataclass (ModelConfig in model/, TrainConfig in train/, ...). A stage's *root* config is a
dataclass whose fields are those section dataclasses, so a TOML file reads naturally:

    [model]
    d_model = 256
    [train]
    lr = 3e-4

and an override names the same path: `--set train.lr=1e-3`. Validation happens in one place, here, so every
stage gets the same one-line errors: an unknown key names the closest valid one, a wrong type names the
expected type, and a value outside a field's range names the range.

Fields may carry `metadata={"help": ..., "range": (lo, hi), "choices": (...)}`; `range` bounds are inclusive
and either side may be None.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A config problem the user can fix; its message is one line naming the problem and the fix."""


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys += _all_keys(hint, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "none"
    if origin is not None:
        return getattr(origin, "__name__", str(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` as type `tp`, or raise ConfigError naming the expected type."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
            if type(None) in args:
                return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{key}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected a boolean (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e6 written in scientific notation
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
                if f.is_integer():
                    return int(f)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        # TOML and float() both accept nan and inf, and nan passes every range check (nan < lo is False)
        if not math.isfinite(number):
            raise ConfigError(f"{key}: {value!r} is not a finite number; give a real value")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        out = [_coerce(v, item_tp, key) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{key}: expected a table/dict, got {value!r}")
    return value


def _check_range(f: dataclasses.Field, value: Any, key: str) -> None:
    md = f.metadata or {}
    if value is None:
        return
    if "choices" in md and value not in md["choices"]:
        raise ConfigError(f"{key}: expected one of {', '.join(map(repr, md['choices']))}, got {value!r}")
    if "range" in md:
        lo, hi = md["range"]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            lo_s = "-inf" if lo is None else lo
            hi_s = "inf" if hi is None else hi
            raise ConfigError(f"{key}: {value!r} is out of range; expected a value in [{lo_s}, {hi_s}]")


def _unknown_key(cls: type, key: str) -> ConfigError:
    close = difflib.get_close_matches(key, _all_keys(cls), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(_all_keys(cls)[:12])}, ..."
    return ConfigError(f"unknown config key '{key}'{hint}")


def from_dict(cls: type, data: dict, _root: type | None = None, _prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict, validating every key and value."""
    root = _root or cls
    if not isinstance(data, dict):
        raise ConfigError(f"{_prefix.rstrip('.') or 'config'}: expected a table, got {data!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = _prefix + name
        if name not in fields:
            raise _unknown_key(root, key)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, root, key + ".")
        else:
            v = _coerce(value, tp, key)
            _check_range(fields[name], v, key)
            kwargs[name] = v
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{_prefix.rstrip('.') or cls.__name__}: {e}") from None
    return obj


def to_dict(obj: Any) -> dict:
    """Dataclass -> plain nested dict (tuples become lists)."""
    return dataclasses.asdict(obj)


def _strip_none(d: Any) -> Any:
    # TOML has no null: a None field is simply left out and takes its default on load.
    if isinstance(d, dict):
        return {k: _strip_none(v) for k, v in d.items() if v is not None}
    if isinstance(d, (list, tuple)):
        return [_strip_none(v) for v in d]
    return d


def parse_value(text: str) -> Any:
    """Parse the right-hand side of `--set key=value` the way TOML would, else keep it as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str], cls: type) -> dict:
    """Apply `a.b=c` strings onto a nested dict (before validation), checking keys against `cls`."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    valid = set(_all_keys(cls))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}' (example: --set train.lr=3e-4)")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in valid:
            raise _unknown_key(cls, key)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{p}' is not a section")
        node[parts[-1]] = parse_value(text.strip())
    return data


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path} (see configs/ for examples)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e}); fix the syntax at that line") from None


def merge(base: dict, extra: dict) -> dict:
    """Deep-merge `extra` into a copy of `base`."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None,
                defaults: dict | None = None, flags: dict | None = None) -> Any:
    """The one entry point: defaults dict <- TOML file <- command-line flags (a nested dict of the flags given)
    <- --set overrides, then validate into `cls`."""
    data = dict(defaults or {})
    if path is not None:
        data = merge(data, load_toml(path))
    data = merge(data, flags or {})
    data = apply_overrides(data, overrides or [], cls)
    return from_dict(cls, data)


def dumps_toml(obj: Any) -> str:
    import tomli_w

    data = _strip_none(to_dict(obj) if dataclasses.is_dataclass(obj) else obj)
    return tomli_w.dumps(data)


def save_config(obj: Any, path: str | Path) -> None:
    from scratchlm.runs import atomic_write_text

    atomic_write_text(path, dumps_toml(obj))


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every leaf field: used by --help listings and the guide."""
    rows = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, f"{prefix}{f.name}.")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        rows.append((prefix + f.name, _type_name(tp), default, (f.metadata or {}).get("help", "")))
    return rows
