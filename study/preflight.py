"""Data checks in the driver, before Ray starts: data that would make every trial fail is one line, exit 2.

Without them a one-country CSV (no set C) or a one-image zip started Ray, ran every trial into the same
error and printed hundreds of lines. The driver has the data loaded anyway; building the windows of every
distinct data config costs milliseconds each.
"""
from __future__ import annotations

from typing import Any

from data.errors import DataError
from study.studyfile import trial_config


def _configs(part: Any) -> list[tuple[str, Any]]:
    """(label, trainable config) of the part's settings (what search trials start from) and of each fixed run."""
    runs = [("settings", {})] + [(f"fixed run {i + 1}", run) for i, run in enumerate(part.fixed)]
    return [(label, trial_config(part, run)) for label, run in runs]


def check_part_data(part: Any, dataset: Any) -> list[str]:
    """Raise the first DataError when no config of the part can get its data; else warn of those that cannot.

    Returns warning lines (a fixed run that will fail while others run): the study goes on with the rest and
    counts the failure at the end.
    """
    check = _covid_problem if part.trainable == "covid" else _faces_problem
    seen: dict[Any, DataError | None] = {}
    problems: list[tuple[str, DataError]] = []
    configs = _configs(part)
    for label, cfg in configs:
        key = _data_key(part.trainable, cfg)
        if key not in seen:
            seen[key] = check(cfg, dataset)
        if seen[key] is not None:
            problems.append((label, seen[key]))
    if len(problems) == len(configs):
        raise problems[0][1]
    return [f"{part.trainable} {label} will fail: {err}" for label, err in problems if label != "settings"]


def _data_key(kind: str, cfg: Any) -> Any:
    if kind == "covid":
        return cfg.data
    return (cfg.max_images, cfg.test_frac, cfg.seed)


def _covid_problem(cfg: Any, source: Any) -> DataError | None:
    from data.sequence_data import build_sequence_data

    try:
        build_sequence_data(cfg.data, source=source)
    except DataError as err:
        return err
    return None


def _faces_problem(cfg: Any, faces: Any) -> DataError | None:
    """Both sides of the train/test split need an image; fewer images than a batch are fine (one short batch)."""
    from data.faces import split_indices

    n = len(faces.images) if cfg.max_images is None else min(len(faces.images), cfg.max_images)
    train, test = split_indices(n, test_frac=cfg.test_frac, seed=cfg.seed)
    if len(train) and len(test):
        return None
    return DataError(f"{n} image(s) leave the {'test' if len(train) else 'training'} part of a "
                     f"{1 - cfg.test_frac:.0%}/{cfg.test_frac:.0%} split empty; the VAE needs at least "
                     f"{_min_images(cfg.test_frac)} images", faces.source)


def _min_images(test_frac: float) -> int:
    from data.faces import split_indices

    return next(n for n in range(2, 10_000) if all(map(len, split_indices(n, test_frac=test_frac))))
