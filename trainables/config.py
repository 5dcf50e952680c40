"""Config dataclasses with flat keys: parsing, checking and flattening, shared by every trainable.

No torch here: the study's driver checks every config of a study file before anything starts, and `study
trainables` lists them, without loading a model library.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeVar

C = TypeVar("C")


# A config field holding another config whose keys stay flat for users: field(..., metadata=NESTED).
NESTED = {"nested": True}


def _nested(cls: type) -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(cls) if f.metadata.get("nested")}


def config_keys(cls: type) -> list[str]:
    """Every flat key a config takes: its own fields and those of its nested configs."""
    nested = _nested(cls)
    return [k for f in dataclasses.fields(cls)
            for k in (config_keys(nested[f.name]) if f.name in nested else [f.name])]


def config_from_dict(cls: type[C], config: dict[str, Any]) -> C:
    """Build a config dataclass from flat keys; unknown keys are an error naming them (a typo must not silently
    use a default). A nested config takes the keys that are its own."""
    names = config_keys(cls)
    unknown = sorted(set(config) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = dict(config)
    for name, sub in _nested(cls).items():
        own = set(config_keys(sub))
        kwargs[name] = config_from_dict(sub, {k: kwargs.pop(k) for k in list(kwargs) if k in own})
    return cls(**kwargs)


def flat_config(cfg: Any) -> dict[str, Any]:
    """A config as the flat dict `config_from_dict` takes back (what params, checkpoints and model files hold)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out |= flat_config(value) if f.metadata.get("nested") else {f.name: value}
    return out


def type_name(annotation: Any) -> str:
    """A field's annotation as its source text ("int", "float | None"), whether or not the module that declares it
    has `from __future__ import annotations` (without it, `int` is the class, not the string)."""
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def check_config_values(cfg: Any, limits: dict[str, tuple[float, float]], choices: dict[str, tuple]) -> None:
    """Types, choices and inclusive limits of a config dataclass (both trainables'): the first bad value is a
    ValueError naming the key, in one line, since a study checks every config in its driver before it starts.
    Whole numbers given as floats (32.0 from a JSON file) become ints."""
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"{key}={getattr(cfg, key)!r}: expected one of {', '.join(map(str, allowed))}")
    for f in dataclasses.fields(cfg):
        value, kind = getattr(cfg, f.name), type_name(f.type)
        if f.metadata.get("nested") or (value is None and "None" in kind):
            continue
        if kind.startswith(("int", "float")):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{f.name}={value!r}: expected a number")
            if not math.isfinite(value):
                raise ValueError(f"{f.name}={value!r}: must be finite")
            if kind.startswith("int"):
                if not float(value).is_integer():
                    raise ValueError(f"{f.name}={value!r}: expected a whole number")
                object.__setattr__(cfg, f.name, int(value))
        elif kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{f.name}={value!r}: expected true or false")
        elif kind.startswith("str") and not isinstance(value, str):
            raise ValueError(f"{f.name}={value!r}: expected a string")
    for key, (lo, hi) in limits.items():
        values = getattr(cfg, key, None)
        for value in (values if isinstance(values, tuple) else [values]):
            if value is not None and not lo <= value <= hi:
                raise ValueError(f"{key}={values!r}: outside the limits [{lo:g}, {hi:g}]")
