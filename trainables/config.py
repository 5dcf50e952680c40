"""Config dataclasses with flat keys: parsing, checking, converting and flattening, shared by every trainable.

No torch here: the study's driver checks every config of a study file before anything starts, and `study
trainables` lists them, without loading a model library.

A study file gives plain values (TOML: numbers, strings, booleans, lists); a field's annotation says what the
trial gets. The annotations a config may use (`SUPPORTED`) are checked when its Trainable is built, so a field no
study file could set correctly is refused before any study runs, and each value is converted on the way in: an
Enum member (from its value), a Literal's value, a Path, a list or tuple (element by element). `flat_config` turns
them back into plain values for what is logged and stored (MLflow params, checkpoints, model files).
"""
from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import sys
import types
import typing
import weakref
from collections.abc import Collection
from pathlib import PurePath
from typing import Any, TypeVar

C = TypeVar("C")


# A config field holding another config whose keys stay flat for users: field(..., metadata=NESTED).
NESTED = {"nested": True}
# What `check_config_class` accepts, for its one-line refusal.
SUPPORTED = ("int, float, bool, str, Path, an Enum (of plain values), Literal[...] (of plain values), list[T], "
             "tuple[T, ...], T | None, or a nested config (field(default_factory=..., metadata=NESTED))")
PLAIN = (str, int, float, bool)


def _nested(cls: type) -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(cls) if f.metadata.get("nested")}


def config_keys(cls: type) -> list[str]:
    """Every flat key a config takes: its own fields and those of its nested configs."""
    nested = _nested(cls)
    return [k for f in dataclasses.fields(cls)
            for k in (config_keys(nested[f.name]) if f.name in nested else [f.name])]


def _places(cls: type, via: str = "") -> list[tuple[str, str]]:
    """Each flat key with the field it is ("MyConfig.seed", "CovidDataConfig.seed (MyConfig.data)")."""
    nested = _nested(cls)
    return [pair for f in dataclasses.fields(cls)
            for pair in (_places(nested[f.name], f"{cls.__name__}.{f.name}") if f.name in nested
                         else [(f.name, f"{cls.__name__}.{f.name}" + (f" ({via})" if via else ""))])]


# ------------------------------------------------------------------------------------------------ annotations
_HINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Unresolved:
    """A string annotation that names nothing the config's module defines (a type local to a function)."""

    def __init__(self, text: str, err: Exception):
        self.text, self.err = text, err


def field_types(cls: type) -> dict[str, Any]:
    """Each field's annotation as a type, whether or not the module has `from __future__ import annotations`
    (then they are strings): `typing.get_type_hints`, else each field alone against the module's names, so one
    field whose type does not resolve (an Enum defined inside a function) is named, not the whole class."""
    if cls in _HINTS:
        return _HINTS[cls]
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError, AttributeError, SyntaxError):
        module = sys.modules.get(cls.__module__)
        names = dict(vars(module)) if module is not None else {}
        hints = {}
        for f in dataclasses.fields(cls):
            if not isinstance(f.type, str):
                hints[f.name] = f.type
                continue
            try:  # what get_type_hints does with a string annotation, one field at a time
                hints[f.name] = eval(f.type, names, dict(vars(cls)))  # noqa: S307 (the plugin's own source)
            except (NameError, TypeError, AttributeError, SyntaxError) as err:
                hints[f.name] = _Unresolved(f.type, err)
        return hints  # not kept: a name defined later in the module may resolve next time
    hints = {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls)}
    _HINTS[cls] = hints
    return hints


def _is_union(t: Any) -> bool:
    return typing.get_origin(t) in (typing.Union, types.UnionType)


def _unsupported(t: Any) -> str | None:
    """Why an annotation is not one a study file can give values for; None when it is."""
    if isinstance(t, _Unresolved):
        return f"annotation {t.text!r} does not resolve ({t.err}); define the type at module level"
    if t in PLAIN or (isinstance(t, type) and issubclass(t, PurePath)):
        return None
    if isinstance(t, type) and issubclass(t, enum.Enum):
        bad = [m.name for m in t if not isinstance(m.value, PLAIN)]
        return f"Enum {t.__name__} has members whose values are not plain: {', '.join(bad)}" if bad else None
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Literal:
        bad = [a for a in args if a is not None and not isinstance(a, PLAIN)]
        return f"Literal values must be plain values, not {bad[0]!r}" if bad else None
    if _is_union(t):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _unsupported(rest[0])
    elif origin is list and len(args) == 1:
        return _unsupported(args[0])
    elif origin is tuple and args:
        items = args[:1] if len(args) == 2 and args[1] is Ellipsis else args
        if Ellipsis not in items:
            return next((p for p in map(_unsupported, items) if p), None)
    return f"annotation {_text(t)} is not supported"


def _text(t: Any) -> str:
    """An annotation as its source text ("int", "dict[str, int]")."""
    if isinstance(t, str):
        return t
    if isinstance(t, type) and not typing.get_args(t):
        return t.__name__
    return str(t).replace("typing.", "")


def check_config_class(cls: type, reserved: Collection[str] = ()) -> None:
    """A config class a study can set whole, or a ValueError in one line: every flat key once (a study file's
    `seed = 5` must not set a nested config's `seed` and leave another), none of the `reserved` names (the
    study's own keys), each field's annotation one of `SUPPORTED` and its default a value of it."""
    _check_nesting(cls)
    seen: dict[str, str] = {}
    for key, place in _places(cls):
        if key in seen:
            raise ValueError(f"{key!r} is both {seen[key]} and {place}: a study file gives every key flat "
                             f"({key} = ...), so two fields cannot share a name; rename one")
        seen[key] = place
        if key in reserved:
            raise ValueError(f"{place}: {key!r} is a name the study uses itself (reserved: "
                             f"{', '.join(reserved)}); rename the field")
    _check_fields(cls)


def _check_nesting(cls: type) -> None:
    for f in dataclasses.fields(cls):
        if f.metadata.get("nested"):
            sub = f.default_factory
            if not (isinstance(sub, type) and dataclasses.is_dataclass(sub)):
                raise ValueError(f"field {f.name!r} of {cls.__name__}: metadata=NESTED needs "
                                 "default_factory=<a config dataclass>")
            _check_nesting(sub)


def _check_fields(cls: type) -> None:
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        where = f"field {f.name!r} of {cls.__name__}"
        if f.metadata.get("nested"):
            _check_fields(f.default_factory)
            continue
        problem = _unsupported(hints[f.name])
        if problem:
            raise ValueError(f"{where}: {problem}; supported: {SUPPORTED}")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        try:
            convert(default, hints[f.name], f.name)
        except ValueError as err:
            raise ValueError(f"{where}: default {err}") from None


# ------------------------------------------------------------------------------------------------ values
class _Bad(ValueError):
    """A value that is not of its annotation; the text says what was expected."""


def _same(a: Any, b: Any) -> bool:
    """Equal as a study file means it: `true` is not `1` and "1" is not `1`, but `1.0` is `1`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return a == b


def _one_of(values: list[Any]) -> str:
    return f"expected one of {', '.join(map(str, values))}"


def _convert(value: Any, t: Any) -> Any:
    """`value` as annotation `t` says (see `convert`); _Bad says what was expected."""
    if _is_union(t):  # T | None
        return None if value is None else _convert(value, next(a for a in typing.get_args(t) if a is not type(None)))
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Literal:
        found = [a for a in args if _same(a, value)]
        if not found:
            raise _Bad(_one_of(list(args)))
        return found[0]
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Bad("expected a list" + (" (a string is not one)" if isinstance(value, str) else ""))
        items = [args[0]] * len(value) if origin is list or args[-1] is Ellipsis else list(args)
        if len(items) != len(value):
            raise _Bad(f"expected a list of {len(items)}")
        out = []
        for i, (v, item) in enumerate(zip(value, items)):
            try:
                out.append(_convert(v, item))
            except _Bad as err:
                raise _Bad(f"element {i + 1} ({v!r}): {err}") from None
        return out if origin is list else tuple(out)
    if isinstance(t, type) and issubclass(t, enum.Enum):
        if isinstance(value, t):
            return value
        found = [m for m in t if _same(m.value, value)]
        if not found:
            raise _Bad(_one_of([m.value for m in t]))
        return found[0]
    if isinstance(t, type) and issubclass(t, PurePath):
        if not isinstance(value, (str, PurePath)) or value == "":
            raise _Bad("expected a path (a non-empty string)")
        return t(value)
    if t is bool:
        if not isinstance(value, bool):
            raise _Bad("expected true or false")
        return value
    if t is str:
        if not isinstance(value, str):
            raise _Bad("expected a string")
        return value
    if t in (int, float):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _Bad("expected a number")
        if not math.isfinite(value):
            raise _Bad("must be finite")
        if t is int:
            if not float(value).is_integer():
                raise _Bad("expected a whole number")
            return int(value)
        return value if isinstance(value, (int, float)) else float(value)
    return value


def convert(value: Any, annotation: Any, name: str) -> Any:
    """A study file's value for field `name` as its annotation says, or a ValueError in one line naming the key:
    int (32.0 from a JSON file becomes 32), float, bool, str, Path, an Enum (by value), a Literal's values,
    list[T] / tuple[T, ...] element by element (a string is not a list), T | None."""
    if _unsupported(annotation):  # only a config no Trainable took (Trainable refuses it): kept as given
        return value
    try:
        return _convert(value, annotation)
    except _Bad as err:
        raise ValueError(f"{name}={value!r}: {err}") from None


def check_types(cfg: Any) -> None:
    """Convert every field of a built config (defaults included) in place; the first bad value is a ValueError."""
    hints = field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        if not f.metadata.get("nested"):
            object.__setattr__(cfg, f.name, convert(getattr(cfg, f.name), hints[f.name], f.name))


def config_from_dict(cls: type[C], config: dict[str, Any]) -> C:
    """Build a config dataclass from flat keys; unknown keys are an error naming them (a typo must not silently
    use a default). A nested config takes the keys that are its own. Each value is converted to its field's
    annotation before the config's own `__post_init__` sees it. A value that does not convert is passed as given
    (a config may accept more: the VAE's `hidden = "64,128"`) and refused with its own line unless the config
    made it one that does. A config that refuses it (a ValueError) says why; one that crashes on the
    value (a TypeError) gives way to the value's own line."""
    names = config_keys(cls)
    unknown = sorted(set(config) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = dict(config)
    hints = field_types(cls)
    first: ValueError | None = None
    for name, sub in _nested(cls).items():
        own = set(config_keys(sub))
        kwargs[name] = config_from_dict(sub, {k: kwargs.pop(k) for k in list(kwargs) if k in own})
    for key in [k for k in kwargs if k not in _nested(cls)]:
        try:
            kwargs[key] = convert(kwargs[key], hints[key], key)
        except ValueError as err:
            first = first or err
    try:
        cfg = cls(**kwargs)
    except TypeError:
        if first is not None:
            raise first from None
        raise
    check_types(cfg)
    return cfg


def plain(value: Any) -> Any:
    """A converted value as a study file writes it: an Enum's value, a path's text, lists and tuples of them."""
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


def flat_config(cfg: Any) -> dict[str, Any]:
    """A config as the flat dict `config_from_dict` takes back (what params, checkpoints and model files hold):
    plain values (`plain`), so MLflow params, JSON and a checkpoint's safe loading take them."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out |= flat_config(value) if f.metadata.get("nested") else {f.name: plain(value)}
    return out


def check_config_values(cfg: Any, limits: dict[str, tuple[float, float]], choices: dict[str, tuple]) -> None:
    """Types (`check_types`), choices and inclusive limits of a config dataclass (call it in `__post_init__`): the
    first bad value is a ValueError naming the key, in one line, since a study checks every config in its driver
    before it starts. Whole numbers given as floats (32.0 from a JSON file) become ints."""
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"{key}={getattr(cfg, key)!r}: {_one_of(list(allowed))}")
    check_types(cfg)
    for key, (lo, hi) in limits.items():
        values = getattr(cfg, key, None)
        for value in (values if isinstance(values, (list, tuple)) else [values]):
            if value is not None and not lo <= value <= hi:
                raise ValueError(f"{key}={values!r}: outside the limits [{lo:g}, {hi:g}]")
