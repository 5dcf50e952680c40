"""Checks in the driver, before Ray starts: data that would make every trial fail, or a config no trial could hold
in memory, is one line, exit 2.

Without them a one-country CSV (no set C) or a one-image zip started Ray, ran every trial into the same
error and printed hundreds of lines, and a model too large for the machine was found out of memory inside a
trial, after the folder, the MLflow runs and Ray existed. The driver has the data loaded anyway; each
trainable's own `check` and `memory` (`Trainable` hooks: the COVID windows, the faces' split, the estimate of a
trial's peak memory) take milliseconds per config.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from data.errors import DataError
from study import studyfile
from study.checks import short
from study.studyfile import Part, trial_config
from trainables.registry import raised


def _configs(part: Part) -> list[tuple[str, Any]]:
    """(label, trainable config) of the part's settings (what search trials start from) and of each fixed run."""
    runs = [("settings", {})] + [(f"fixed run {i + 1}", run) for i, run in enumerate(part.fixed)]
    return [(label, trial_config(part, run)) for label, run in runs]


def study_source(spec: Any) -> Path:
    """The study file a study's one-line errors name: the preset's file, or the study file given."""
    return studyfile.preset_path(spec.preset) if spec.preset else Path(spec.target)


@contextmanager
def plugin_hooks(part: Part, source: Path | None, *hooks: str) -> Iterator[None]:
    """Any exception (a `sys.exit()` too) that one of the part's trainable's `hooks` raises in the `with` block is
    one line, a DataError naming the hook, the error and where in the plugin it was raised: a `load_data` or a
    `check` that breaks is the plugin's mistake, found before anything is created, not a 40-line traceback. A
    DataError (a hook's own way to refuse the data) passes as it is, and so does an error raised outside the
    hooks (ours)."""
    try:
        yield
    except DataError:
        raise
    except (Exception, SystemExit) as err:
        hook = _hook_in(err, part.plugin, hooks)
        if hook is None:
            raise
        fn = getattr(part.plugin, hook)
        root = part.ship.parent if part.ship is not None else _code_root(fn)
        raise DataError(f"part {part.name}: the trainable's {hook} raised {raised(err, root)}", source) from None


def _code(fn: Any) -> Any:
    """The code object a call of `fn` runs (a function, a functools.partial, a callable object)."""
    fn = getattr(fn, "func", fn)
    return getattr(fn, "__code__", None) or getattr(getattr(type(fn), "__call__", None), "__code__", None)


def _hook_in(err: BaseException, plugin: Any, hooks: tuple[str, ...]) -> str | None:
    """The outermost of `hooks` running where `err` was raised, None when none of them was."""
    codes = {_code(getattr(plugin, h)): h for h in hooks if getattr(plugin, h, None) is not None}
    codes.pop(None, None)
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            return codes[tb.tb_frame.f_code]
        tb = tb.tb_next
    return None


def _code_root(fn: Any) -> Path | None:
    code = _code(fn)
    return Path(code.co_filename).resolve().parent if code is not None else None


def check_part_data(part: Part, dataset: Any, spec: Any = None) -> list[str]:
    """Raise the first DataError when no config of the part can get its data; else warn of those that cannot.
    With the study's `spec` (a StudySpec), also refuse a config a trial cannot hold in memory (`check_memory`).
    A `check` or `memory` that raises anything else is one line too (`plugin_hooks`).

    Returns warning lines (a fixed run that will fail while others run): the study goes on with the rest and
    counts the failure at the end. A trainable without a `check` is not checked here.
    """
    with plugin_hooks(part, study_source(spec) if spec is not None else None, "check", "memory"):
        warnings = _check_data(part, dataset)
        if spec is not None:
            check_memory(part, dataset, spec)
    return warnings


def _check_data(part: Part, dataset: Any) -> list[str]:
    if part.plugin.check is None:
        return []
    configs = _configs(part)
    problems: list[tuple[str, DataError]] = []
    for label, cfg in configs:
        try:
            part.plugin.check(cfg, dataset)
        except DataError as err:
            problems.append((label, err))
    if len(problems) == len(configs):
        raise problems[0][1]
    return [f"{part.name} {label} will fail: {err}" for label, err in problems if label != "settings"]


# ------------------------------------------------------------------------------------------------------ memory
def check_memory(part: Part, dataset: Any, spec: Any) -> None:
    """DataError (one line: the study file, the part, the config, both numbers) when a trial of the part needs
    more memory than it can have, by its trainable's `memory` estimate: each fixed run and the search's worst
    case (`worst_searched`), against this machine's memory (physical, or the container's limit when lower)
    and, with --gpus-per-trial, the trial's share of one GPU. A trial that fits alone may still not fit beside
    the others Ray runs at once; that is left to Ray. On a cluster (--address) nothing is checked here: its
    nodes' memory is not known before Ray is joined."""
    if part.plugin.memory is None or spec.address:
        return
    limits = memory_limits(spec.gpus_per_trial)
    runs = [(f"fixed run {i + 1} {short(run)}", run) for i, run in enumerate(part.fixed)]
    runs += [(f"search's worst case {short(run)}", run) for run in worst_searched(part, dataset)]
    for label, run in runs:
        cfg = trial_config(part, run)
        need = part.plugin.memory(cfg, dataset)
        for what, have, gpu in limits:
            if need > have and not (gpu and getattr(cfg, "device", "auto") == "cpu"):
                raise DataError(f"{part.name} {label}: a trial needs about {_gib(need)} of memory, more than "
                                f"{what} ({_gib(have)}); make the model, the batch or the data smaller",
                                study_source(spec))


def worst_searched(part: Part, dataset: Any) -> list[dict[str, Any]]:
    """The searched values a trial needs the most memory with: each key at its value (`studyfile.edges`) that
    needs the most with the rest at the part's settings, then all of those at once (the worst case where more of
    a key never needs less memory, as for widths, depths, lengths and batches). When those cannot work together,
    each alone. Nothing without a search."""
    if not part.num_samples or not part.space:
        return []
    corner = {}
    for key, dist in part.space.items():
        sized = [(part.plugin.memory(trial_config(part, {key: v}), dataset), i, v)
                 for i, v in enumerate(studyfile.edges(dist))]
        corner[key] = max(sized)[2]  # ties: the later value
    try:
        trial_config(part, corner)
        return [corner]
    except (ValueError, TypeError):
        return [{key: value} for key, value in corner.items()]


def memory_limits(gpus_per_trial: float) -> list[tuple[str, int, bool]]:
    """(what, bytes, on a GPU) a local trial may use: this machine's memory, and its share of one GPU."""
    limits = [("this machine's memory", _machine_memory(), False)]
    if gpus_per_trial > 0:
        import torch

        if torch.cuda.is_available():
            total = torch.cuda.get_device_properties(0).total_memory
            limits.append((f"--gpus-per-trial {gpus_per_trial:g} of a {_gib(total)} GPU",
                           int(total * min(1.0, gpus_per_trial)), True))
    return limits


def _machine_memory() -> int:
    """Physical memory, or the cgroup's limit (a container's) when it is lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
