"""Data checks in the driver, before Ray starts: data that would make every trial fail is one line, exit 2.

Without them a one-country CSV (no set C) or a one-image zip started Ray, ran every trial into the same
error and printed hundreds of lines. The driver has the data loaded anyway; each trainable's own `check`
(a `Trainable` hook: the COVID windows, the faces' split) takes milliseconds per config.
"""
from __future__ import annotations

from typing import Any

from data.errors import DataError
from study.studyfile import Part, trial_config


def _configs(part: Part) -> list[tuple[str, Any]]:
    """(label, trainable config) of the part's settings (what search trials start from) and of each fixed run."""
    runs = [("settings", {})] + [(f"fixed run {i + 1}", run) for i, run in enumerate(part.fixed)]
    return [(label, trial_config(part, run)) for label, run in runs]


def check_part_data(part: Part, dataset: Any) -> list[str]:
    """Raise the first DataError when no config of the part can get its data; else warn of those that cannot.

    Returns warning lines (a fixed run that will fail while others run): the study goes on with the rest and
    counts the failure at the end. A trainable without a `check` is not checked here.
    """
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
