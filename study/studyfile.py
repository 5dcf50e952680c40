"""Studies as files: what is searched, the constants, the fixed runs and the budget, in TOML a user can copy.

The format is in the README ("Your own study as a file"); the shipped presets are such files
(study/presets/*.toml, `study preset show NAME`). Every key is checked against the trainable's config before
anything is created: a mistake is one line naming the file and the key. A space becomes Optuna distributions
here, and only here: the searcher, the MLflow tags and analysis use them.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution,
                                  distribution_to_json)

from data.errors import DataError
from study.checks import NAME_RE
from trainables import registry
from trainables.common import config_keys
from trainables.registry import STUDY_KEYS

PRESET_DIR = Path(__file__).resolve().parent / "presets"
TOP_KEYS = {"name", "part"}
PART_KEYS = {"trainable", "num_samples", "scheduler", "grace_period", "constants", "space", "fixed"}
SCHEDULERS = ("asha", "none")
# Targets of `study run NAME --preset P`: which parts of the preset file run.
TARGETS = {"covid": ("covid",), "vae": ("vae",), "homework": ("covid", "vae")}


class StudyFileError(DataError):
    """A study file that cannot run; `str()` is one line: the file, where in it, and what is wrong."""


@dataclass(frozen=True)
class Part:
    """One Tuner's worth of work: a trainable, its constants, fixed runs (Optuna's first points) and its space."""

    trainable: str
    constants: dict[str, Any]
    space: dict[str, BaseDistribution]
    fixed: list[dict[str, Any]] = field(default_factory=list)
    num_samples: int = 0
    scheduler: str = "none"
    grace_period: int = 1

    @property
    def metric(self) -> str:
        return registry.get(self.trainable).metric

    @property
    def mode(self) -> str:
        return registry.get(self.trainable).mode

    @property
    def epochs(self) -> int:
        return int(self.constants.get("epochs", registry.get(self.trainable).full_config({})["epochs"]))

    @property
    def total_trials(self) -> int:
        return len(self.fixed) + self.num_samples


@dataclass(frozen=True)
class StudyFile:
    name: str | None
    parts: list[Part]


# ------------------------------------------------------------------------------------------------ reading
def load(path: str | Path) -> StudyFile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise StudyFileError(f"cannot read it ({getattr(err, 'strerror', None) or err})", path) from None
    return parse(text, path)


def parse(text: str, path: str | Path) -> StudyFile:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise StudyFileError(f"TOML syntax error: {err}", path) from None
    _no_unknown(doc, TOP_KEYS, "", path)
    name = doc.get("name")
    if name is not None:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in (".", ".."):
            raise StudyFileError(f"name = {name!r}: use 1-128 letters, digits, '-', '_' or '.'", path)
    raw_parts = doc.get("part")
    if not isinstance(raw_parts, list) or not raw_parts:
        raise StudyFileError("no [[part]]: a study needs at least one part (trainable = \"covid\" or \"vae\")", path)
    parts = [_part(raw, i + 1, path) for i, raw in enumerate(raw_parts)]
    seen = [p.trainable for p in parts]
    for t in seen:
        _check(seen.count(t) == 1, f"two parts with trainable = {t!r}: give each trainable one part", path)
    return StudyFile(name=name, parts=parts)


def _no_unknown(table: dict, known: set[str], where: str, path: str | Path) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise StudyFileError(f"{where}unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}", path)


def _part(raw: Any, index: int, path: str | Path) -> Part:
    where = f"part {index}: "
    _check(isinstance(raw, dict), f"{where}expected a table", path)
    _no_unknown(raw, PART_KEYS, where, path)
    trainable = raw.get("trainable")
    if trainable not in registry.TRAINABLES:
        raise StudyFileError(f"{where}trainable = {trainable!r}: choose from {', '.join(registry.TRAINABLES)}", path)
    where = f"part {index} ({trainable}): "
    cls = registry.get(trainable).config_cls
    known = set(config_keys(cls))
    unknown = f": not a {trainable} setting"
    constants = _table(raw.get("constants", {}), f"{where}constants", path)
    for key in constants:
        _check(key in known, f"{where}constants.{key}{unknown}", path)
    _config(cls, constants, f"{where}constants", path)
    space_raw = _table(raw.get("space", {}), f"{where}space", path)
    space = {}
    for key, spec in space_raw.items():
        _check(key in known, f"{where}space.{key}{unknown}", path)
        if key in constants:
            raise StudyFileError(f"{where}{key} is both searched (space) and constant (constants): pick one", path)
        space[key] = distribution(spec, f"{where}space.{key}", path)
        for value in _edges(space[key]):  # each end of a range, each choice: a value the trainable accepts
            _config(cls, {**constants, key: value}, f"{where}space.{key}", path)
    fixed_raw = raw.get("fixed", [])
    if not isinstance(fixed_raw, list) or not all(isinstance(r, dict) for r in fixed_raw):
        raise StudyFileError(f"{where}fixed: expected a list of tables, one per run", path)
    for i, run in enumerate(fixed_raw):
        for key in run:
            _check(key in known, f"{where}fixed run {i + 1}: {key}{unknown}", path)
        _config(cls, {**constants, **run}, f"{where}fixed run {i + 1}", path)
    num_samples = _int(raw.get("num_samples", 0), f"{where}num_samples", 0, path)
    grace = _int(raw.get("grace_period", 1), f"{where}grace_period", 1, path)
    scheduler = raw.get("scheduler", "none")
    if scheduler not in SCHEDULERS:
        raise StudyFileError(f"{where}scheduler = {scheduler!r}: choose from {', '.join(SCHEDULERS)}", path)
    _check(num_samples + len(fixed_raw) > 0, f"{where}no trials: give num_samples > 0 or fixed runs", path)
    if num_samples and not space:
        raise StudyFileError(f"{where}num_samples = {num_samples} with an empty [part.space]: nothing to search",
                             path)
    return Part(trainable=trainable, constants=constants, space=space, fixed=[dict(r) for r in fixed_raw],
                num_samples=num_samples, scheduler=scheduler, grace_period=grace)


def _check(ok: bool, problem: str, path: str | Path) -> None:
    if not ok:
        raise StudyFileError(problem, path)


def _table(value: Any, where: str, path: str | Path) -> dict:
    _check(isinstance(value, dict), f"{where}: expected a table of KEY = VALUE", path)
    return dict(value)


def _int(value: Any, where: str, low: int, path: str | Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise StudyFileError(f"{where} = {value!r}: expected a whole number >= {low}", path)
    return value


def _config(cls: Any, config: dict, where: str, path: str | Path) -> None:
    try:
        cls.from_dict({k: v for k, v in config.items() if k not in STUDY_KEYS})
    except (ValueError, TypeError) as err:
        raise StudyFileError(f"{where}: {err}", path) from None


def trial_config(part: Part, run: dict[str, Any]) -> Any:
    """The trainable config a trial of `part` running `run` gets (ValueError/TypeError naming a bad key)."""
    return registry.get(part.trainable).config_cls.from_dict(
        {k: v for k, v in {**part.constants, **run}.items() if k not in STUDY_KEYS})


def distribution(spec: Any, where: str, path: str | Path) -> BaseDistribution:
    """`{ choices = [...] }`, `{ int = [lo, hi] }` or `{ float = [lo, hi] }` (`log = true`, `step = s`)."""
    kinds = [k for k in ("choices", "int", "float") if isinstance(spec, dict) and k in spec]
    if len(kinds) != 1:
        raise StudyFileError(f"{where}: expected one of {{ choices = [...] }}, {{ int = [lo, hi] }}, "
                             f"{{ float = [lo, hi] }}", path)
    kind = kinds[0]
    _no_unknown(spec, {kind} | ({"log", "step"} if kind != "choices" else set()), f"{where}: ", path)
    if kind == "choices":
        choices = spec["choices"]
        _check(isinstance(choices, list) and len(choices) > 0, f"{where}: choices must be a non-empty list", path)
        if any(isinstance(c, (dict, list)) for c in choices) or len(set(map(json.dumps, choices))) < len(choices):
            raise StudyFileError(f"{where}: choices must be distinct plain values (numbers, strings, booleans)", path)
        return CategoricalDistribution(choices)
    bounds, log, step = spec[kind], spec.get("log", False), spec.get("step")
    number = int if kind == "int" else (int, float)
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)):
        raise StudyFileError(f"{where}: {kind} = [lo, hi] with two {'whole numbers' if kind == 'int' else 'numbers'}",
                             path)
    lo, hi = bounds
    _check(lo <= hi, f"{where}: inverted range [{lo}, {hi}] (low above high)", path)
    _check(lo != hi, f"{where}: empty range [{lo}, {hi}]: set a single value in [part.constants]", path)
    _check(isinstance(log, bool), f"{where}: log = {log!r}: expected true or false", path)
    _check(not log or lo > 0, f"{where}: log = true needs a low bound above 0, got {lo}", path)
    if step is not None and (log or isinstance(step, bool) or not isinstance(step, number) or step <= 0):
        raise StudyFileError(f"{where}: step = {step!r}: a positive number, and not with log = true", path)
    if kind == "int":
        return IntDistribution(lo, hi, log=log, step=step or 1)
    return FloatDistribution(float(lo), float(hi), log=log, step=step)


def _edges(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


# ------------------------------------------------------------------------------------------------ writing
def space_spec(dist: BaseDistribution) -> dict[str, Any]:
    """A distribution as the study file writes it (the inverse of `distribution`)."""
    if isinstance(dist, CategoricalDistribution):
        return {"choices": list(dist.choices)}
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    spec: dict[str, Any] = {kind: [dist.low, dist.high]}
    if dist.log:
        spec["log"] = True
    if dist.step not in (None, 1) or (kind == "float" and dist.step is not None):
        spec["step"] = dist.step
    return spec


def dumps(study: StudyFile) -> str:
    """The study as a file `parse` reads back to the same parts (what a study folder keeps as it ran), in the
    presets' layout: one line per setting, per searched key and per fixed run. (tomli-w writes every list and
    table over several lines: a preset's 18 fixed runs became 150 lines.)"""
    lines = [f"name = {_toml(study.name)}", ""] if study.name else []
    for p in study.parts:
        lines += ["[[part]]", f"trainable = {_toml(p.trainable)}", f"num_samples = {p.num_samples}",
                  f"scheduler = {_toml(p.scheduler)}", f"grace_period = {p.grace_period}"]
        lines += ["fixed = [", *(f"  {_toml(run)}," for run in p.fixed), "]"] if p.fixed else []
        lines += ["", "[part.constants]", *(f"{k} = {_toml(v)}" for k, v in p.constants.items())]
        lines += ["", "[part.space]", *(f"{k} = {_toml(space_spec(d))}" for k, d in p.space.items()), ""]
    return "\n".join(lines)


def _toml(value: Any) -> str:
    """One TOML value on one line: a finite number, a boolean or a string is written as in JSON; TOML has no null."""
    if isinstance(value, (bool, int, float, str)):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k) if not k.isidentifier() else k} = {_toml(v)}"
                                for k, v in value.items()) + " }"
    raise ValueError(f"{value!r}: a study file cannot hold a {type(value).__name__} (TOML has no null)")


def space_json(part: Part) -> dict[str, str]:
    """The space as Optuna's own JSON per key (MLflow tags, the Optuna study's attributes; analysis reads it)."""
    return {k: distribution_to_json(d) for k, d in part.space.items()}


# ------------------------------------------------------------------------------------------------ presets
def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_path(name: str) -> Path:
    if name not in preset_names():
        raise StudyFileError(f"unknown preset {name!r}; choose from {', '.join(preset_names())}", PRESET_DIR)
    return PRESET_DIR / f"{name}.toml"


def resolve(target: str, preset: str | None) -> tuple[StudyFile, str]:
    """What `study run TARGET [--preset P]` runs, and the file's text: a preset's parts for a name (covid, vae,
    homework), or a study file's parts for a path."""
    if target in TARGETS:
        path = preset_path(preset or "homework")
        study = load(path)
        return dataclasses.replace(study, parts=[p for p in study.parts if p.trainable in TARGETS[target]]), target
    path = Path(target)
    if preset is not None:
        raise StudyFileError("--preset goes with covid, vae or homework; a study file holds its own settings", path)
    _check(path.is_file(), "no such study file (or give covid, vae or homework)", path)
    return load(path), path.stem


def preset_part(preset: str, trainable: str) -> Part:
    """One part of a shipped preset (benchmarks and tests build on them)."""
    return next(p for p in load(preset_path(preset)).parts if p.trainable == trainable)
