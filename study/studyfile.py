"""Studies as files: what is searched, the constants, the fixed runs and the budget, in TOML a user can copy.

The format is in the README ("Your own study as a file"); the shipped presets are such files
(study/presets/*.toml, `study preset show NAME`). Every key is checked against the trainable's config before
anything is created: a mistake is one line naming the file and the key. A space becomes Optuna distributions
here, and only here: the searcher, the MLflow tags and analysis use them.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data.errors import DataError
from data.inputs import InputError, parse_bounded, read_input
from study.checks import NAME_RE, NAME_RULE, name_ok
from trainables import registry
from trainables.names import STUDY_KEYS
from trainables.trainable import Trainable

if TYPE_CHECKING:  # optuna (~0.2 s with numpy) is imported where a space is built or read, not at `study --help`
    from optuna.distributions import BaseDistribution

PRESET_DIR = Path(__file__).resolve().parent / "presets"
TOP_KEYS = {"name", "part"}
PART_KEYS = {"trainable", "name", "num_samples", "scheduler", "grace_period", "constants", "space", "fixed"}
SCHEDULERS = ("asha", "none")
# Searched values are checked as constants are: each value alone, then combinations of the keys' values (a conv
# VAE's image_size with its arch and depth): all of them when there are at most COMBINATIONS, else every pair of
# keys, in the space's order, until COMBINATIONS. Values: each choice, each end of a range, and every value of an
# int range of at most RANGE_VALUES values (image_size = { int = [28, 36] } must hold no size the depth cannot halve).
COMBINATIONS = 512
RANGE_VALUES = 32
# `study run homework --preset P` runs every part of the preset; `study run NAME --preset P` its part NAME.
ALL_PARTS = "homework"


class StudyFileError(DataError):
    """A study file that cannot run; `str()` is one line: the file, where in it, and what is wrong."""


@dataclass(frozen=True)
class Part:
    """One Tuner's worth of work: a trainable, its constants, fixed runs (Optuna's first points) and its space.

    `trainable` is the reference as the file gives it (a name, or module:attribute); `plugin` the Trainable it
    resolved to and `ship` the module's file or folder when it lies beside the study file (Ray's runtime
    environment sends it to every worker). `name` names the part's Optuna study, Tune folder and MLflow tag:
    the trainable's name unless the file gives one, so one file can hold two parts of one trainable."""

    trainable: str
    constants: dict[str, Any]
    space: dict[str, BaseDistribution]
    fixed: list[dict[str, Any]] = field(default_factory=list)
    num_samples: int = 0
    scheduler: str = "none"
    grace_period: int = 1
    name: str = ""
    plugin: Trainable | None = field(default=None, compare=False, repr=False)
    ship: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.plugin is None:
            object.__setattr__(self, "plugin", registry.get(self.trainable))
        if not self.name:
            object.__setattr__(self, "name", self.plugin.name)

    @property
    def metric(self) -> str:
        return self.plugin.metric

    @property
    def mode(self) -> str:
        return self.plugin.mode

    @property
    def epochs(self) -> int:
        return int(self.constants.get("epochs", self.plugin.full_config({})["epochs"]))

    @property
    def total_trials(self) -> int:
        return len(self.fixed) + self.num_samples


@dataclass(frozen=True)
class StudyFile:
    name: str | None
    parts: list[Part]


# ------------------------------------------------------------------------------------------------ reading
def load(path: str | Path, base_dir: str | Path | None = None) -> StudyFile:
    path = Path(path)
    try:
        text = read_input(path)
    except InputError as err:
        raise StudyFileError(str(err), path) from None
    return parse(text, path, base_dir)


def parse(text: str, path: str | Path, base_dir: str | Path | None = None) -> StudyFile:
    """A study file's parts, every key checked. `base_dir`: where `module:attribute` trainables are found first
    (default: the file's own folder, so a `my_model.py` beside `my-study.toml` needs no install)."""
    if base_dir is None and Path(path).parent.is_dir():
        base_dir = Path(path).parent
    try:
        doc = parse_bounded(tomllib.loads, text)
    except tomllib.TOMLDecodeError as err:
        raise StudyFileError(f"TOML syntax error: {err}", path) from None
    except InputError as err:
        raise StudyFileError(str(err), path) from None
    _no_unknown(doc, TOP_KEYS, "", path)
    name = doc.get("name")
    _check(name is None or name_ok(name), f"name = {name!r}: {NAME_RULE}", path)
    raw_parts = doc.get("part")
    if not isinstance(raw_parts, list) or not raw_parts:
        raise StudyFileError("no [[part]]: a study needs at least one part (trainable = NAME or module:attribute; "
                             f"built in: {', '.join(registry.BUILTINS)})", path)
    parts = [_part(raw, i + 1, path, base_dir) for i, raw in enumerate(raw_parts)]
    seen = [p.name for p in parts]
    for n in seen:
        _check(seen.count(n) == 1, f"two parts named {n!r}: give each part its own name = \"...\"", path)
    return StudyFile(name=name, parts=parts)


def _no_unknown(table: dict, known: set[str], where: str, path: str | Path) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise StudyFileError(f"{where}unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}", path)


def _part(raw: Any, index: int, path: str | Path, base_dir: str | Path | None) -> Part:
    where = f"part {index}: "
    _check(isinstance(raw, dict), f"{where}expected a table", path)
    _no_unknown(raw, PART_KEYS, where, path)
    ref = raw.get("trainable")
    try:
        found = registry.find(ref, base_dir)
    except registry.PluginError as err:
        raise StudyFileError(f"{where}trainable = {err}", path) from None
    plugin = found.trainable
    name = raw.get("name", plugin.name)
    _check(name_ok(name), f"{where}name = {name!r}: {NAME_RULE}", path)
    where = f"part {index} ({name}): "
    known = set(plugin.keys())
    unknown = f": not a {plugin.name} setting ({plugin.config.__name__} has no such field)"
    constants = _table(raw.get("constants", {}), f"{where}constants", path)
    for key in constants:
        _check(key in known, f"{where}constants.{key}{unknown}", path)
    _config(plugin, constants, f"{where}constants", path)
    space_raw = _table(raw.get("space", {}), f"{where}space", path)
    space = {}
    for key, spec in space_raw.items():
        _check(key in known, f"{where}space.{key}{unknown}", path)
        if key in constants:
            raise StudyFileError(f"{where}{key} is both searched (space) and constant (constants): pick one", path)
        space[key] = distribution(spec, f"{where}space.{key}", path)
        for value in edges(space[key]):  # each end of a range, each choice: a value the trainable accepts
            _config(plugin, {**constants, key: value}, f"{where}space.{key}", path)
    for values in _combinations(space):  # and together, as a search trial gets them
        _config(plugin, {**constants, **values}, f"{where}space {', '.join(f'{k}={v!r}' for k, v in values.items())}",
                path)
    fixed_raw = raw.get("fixed", [])
    if not isinstance(fixed_raw, list) or not all(isinstance(r, dict) for r in fixed_raw):
        raise StudyFileError(f"{where}fixed: expected a list of tables, one per run", path)
    for i, run in enumerate(fixed_raw):
        for key in run:
            _check(key in known, f"{where}fixed run {i + 1}: {key}{unknown}", path)
        _config(plugin, {**constants, **run}, f"{where}fixed run {i + 1}", path)
    num_samples = _int(raw.get("num_samples", 0), f"{where}num_samples", 0, path)
    grace = _int(raw.get("grace_period", 1), f"{where}grace_period", 1, path)
    scheduler = raw.get("scheduler", "none")
    if scheduler not in SCHEDULERS:
        raise StudyFileError(f"{where}scheduler = {scheduler!r}: choose from {', '.join(SCHEDULERS)}", path)
    _check(num_samples + len(fixed_raw) > 0, f"{where}no trials: give num_samples > 0 or fixed runs", path)
    if num_samples and not space:
        raise StudyFileError(f"{where}num_samples = {num_samples} with an empty [part.space]: nothing to search",
                             path)
    return Part(trainable=ref, constants=constants, space=space, fixed=[dict(r) for r in fixed_raw],
                num_samples=num_samples, scheduler=scheduler, grace_period=grace, name=name, plugin=plugin,
                ship=found.ship)


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


def _config(plugin: Trainable, config: dict, where: str, path: str | Path) -> None:
    try:
        plugin.make_config({k: v for k, v in config.items() if k not in STUDY_KEYS})
    except (ValueError, TypeError) as err:
        raise StudyFileError(f"{where}: {err}", path) from None


def trial_config(part: Part, run: dict[str, Any]) -> Any:
    """The trainable config a trial of `part` running `run` gets (ValueError/TypeError naming a bad key)."""
    return part.plugin.make_config({k: v for k, v in {**part.constants, **run}.items() if k not in STUDY_KEYS})


def distribution(spec: Any, where: str, path: str | Path) -> BaseDistribution:
    """`{ choices = [...] }`, `{ int = [lo, hi] }` or `{ float = [lo, hi] }` (`log = true`, `step = s`)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

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


def edges(dist: BaseDistribution) -> list[Any]:
    """The values of a searched key that are checked: each choice, each end of a range, every value of a short
    int range."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and (dist.high - dist.low) // dist.step < RANGE_VALUES:
        return list(range(dist.low, dist.high + 1, dist.step))
    return [dist.low, dist.high]


def _combinations(space: dict[str, BaseDistribution]) -> list[dict[str, Any]]:
    """Two or more searched keys' values together (see COMBINATIONS): every combination, or pairs up to the cap."""
    values = {k: edges(d) for k, d in space.items()}
    if len(values) < 2:
        return []
    groups = ([list(values)] if math.prod(map(len, values.values())) <= COMBINATIONS
              else itertools.combinations(values, 2))
    out: list[dict[str, Any]] = []
    for keys in groups:
        combos = [dict(zip(keys, v)) for v in itertools.product(*(values[k] for k in keys))]
        out += combos if len(out) + len(combos) <= COMBINATIONS else []
    return out


# ------------------------------------------------------------------------------------------------ writing
def space_spec(dist: BaseDistribution) -> dict[str, Any]:
    """A distribution as the study file writes it (the inverse of `distribution`)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

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
        lines += ["[[part]]", f"trainable = {_toml(p.trainable)}"]
        lines += [f"name = {_toml(p.name)}"] if p.name != p.plugin.name else []
        lines += [f"num_samples = {p.num_samples}",
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
    from optuna.distributions import distribution_to_json

    return {k: distribution_to_json(d) for k, d in part.space.items()}


# ------------------------------------------------------------------------------------------------ presets
def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_path(name: str) -> Path:
    if name not in preset_names():
        raise StudyFileError(f"unknown preset {name!r}; choose from {', '.join(preset_names())}", PRESET_DIR)
    return PRESET_DIR / f"{name}.toml"


def is_preset_target(target: str) -> bool:
    """`study run TARGET`: a preset's part (or homework: all of them) rather than a study file's path."""
    return target == ALL_PARTS or (not target.endswith(".toml") and NAME_RE.fullmatch(target) is not None
                                   and not Path(target).exists())


def resolve(target: str, preset: str | None) -> tuple[StudyFile, str]:
    """What `study run TARGET [--preset P]` runs: a preset's part named TARGET (homework: every part), or a
    study file's parts for a path."""
    if is_preset_target(target):
        path = preset_path(preset or ALL_PARTS)
        study = load(path)
        parts = [p for p in study.parts if target in (ALL_PARTS, p.name)]
        if not parts:
            raise StudyFileError(f"{target!r}: no such study file, nor a part of the {path.stem} preset (its "
                                 f"parts: {', '.join(p.name for p in study.parts)}; {ALL_PARTS}: all)", path)
        return dataclasses.replace(study, parts=parts), target
    path = Path(target)
    if preset is not None:
        raise StudyFileError(f"--preset goes with a preset's part or {ALL_PARTS}; a study file holds its own "
                             "settings", path)
    _check(path.exists(), f"no such study file (or give a preset's part, or {ALL_PARTS})", path)
    return load(path), path.stem


def preset_part(preset: str, name: str) -> Part:
    """One part of a shipped preset (benchmarks and tests build on them)."""
    return next(p for p in load(preset_path(preset)).parts if p.name == name)
