"""Config loading: YAML plus ``--key=value`` overrides into the frozen dataclasses of ``vitrine.config``.

Unknown keys and ill-typed values raise ``ConfigError`` naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vitrine.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Override:
    """A command-line value: read as YAML for typed settings, kept as typed for text ones (YAML would turn
    ``--output=0100`` into 64, ``--model=hybrid:`` into a mapping and a date-like path into a date)."""

    raw: str
    parsed: Any


def _plain(value: Any) -> Any:
    """A free-form value (inside a mapping setting) with every command-line ``Override`` read as YAML."""
    if isinstance(value, Override):
        return value.parsed
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check and convert one value against its annotation, raising ConfigError on mismatch."""
    origin = typing.get_origin(tp)
    if isinstance(value, Override):
        structured = value.raw.lstrip()[:1] in ("[", "{")  # a list or mapping written out is refused for text
        keep_text = ((tp is str and not structured) or (origin is tuple and not isinstance(value.parsed, list))
                     or (tp is int and value.raw.strip().lstrip("+-").isdigit()))  # "0100" is 100, not octal 64
        value = value.raw if keep_text else value.parsed
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in {"true", "false", "yes", "no", "1", "0"}:
            return value.lower() in {"true", "yes", "1"}
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool):  # e.g. use_gpu: false -> "false"
            return str(value).lower()
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return tuple(_coerce(v, typing.get_args(tp)[0], key) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {k: _plain(v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys by name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a config (for YAML dumps and MLflow params)."""
    return dataclasses.asdict(cfg)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a config, e.g. ``{"train.lr": 3e-5}``."""
    out: dict[str, Any] = {}
    for k, v in (to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg).items():
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["train.lr=1e-4", "--model.embed_dim=128"]`` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for item in items:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(f"override '{item}' must look like --section.key=value")
        key, raw = text.split("=", 1)
        try:
            parsed = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            parsed = raw
        value = Override(raw, parsed)
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with an earlier override of '{part}'")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two nested config dicts; ``extra`` wins."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(cls: type[T], path: str | None = None, overrides: list[str] | None = None) -> T:
    """Defaults, then the YAML file (if any), then overrides: the job config ``cls``."""
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{path}' does not exist; pass an existing YAML file to --config")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{path}' is not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
        data = loaded
    data = merge(data, parse_overrides(overrides or []))
    return from_dict(cls, data)
