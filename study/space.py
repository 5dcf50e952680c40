"""Optuna search for Ray Tune: a define-by-run space from a preset, and a searcher that knows about ASHA.

How the searcher learns about stopped trials: Ray's OptunaSearch tells Optuna COMPLETE with the last reported
value even when ASHA stopped the trial after a few epochs, so TPE would rank a 2-epoch score as if it were a
full-budget one. `BudgetAwareOptunaSearch` tells Optuna PRUNED for any trial that ended before `max_t`
training iterations. Every epoch was already reported to the Optuna trial as an intermediate value
(`on_trial_result`), and Optuna's TPE ranks pruned trials below complete ones, ordered by how far they got
and then by their last intermediate value. So a stopped trial still informs the search, as a partial result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from study.presets import Part

TRAINING_ITERATION = "training_iteration"


def split_fixed(part: Part) -> tuple[list[dict], list[dict]]:
    """Fixed runs as Optuna points (only keys of the space, in range) and the remainder returned as constants."""
    points, extras = [], []
    for run in part.fixed:
        point = {k: v for k, v in run.items() if k in part.space and _in_space(part.space[k], v)}
        points.append(point)
        extras.append({k: v for k, v in run.items() if k not in point})
    return points, extras


def _in_space(spec: tuple, value: Any) -> bool:
    kind = spec[0]
    if kind == "categorical":
        return value in spec[1]
    return spec[1] <= value <= spec[2]


@dataclass(frozen=True)
class DefineByRun:
    """The define-by-run function: suggest every space key; the first len(fixed) trials are the fixed runs.

    Optuna hands out enqueued points first, in order, so trial.number < n_fixed is the index of the fixed run.
    Returning the full fixed run overrides the suggestions, so a fixed trial gets exactly its values (seed and
    norm included, which are not part of the space). A class, not a closure: Tune pickles the searcher with
    the experiment state so that a study can be resumed.
    """

    space: dict[str, tuple]
    fixed: tuple[dict[str, Any], ...]

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        for name, spec in self.space.items():
            _suggest_one(trial, name, spec)
        if trial.number < len(self.fixed):
            return {**self.fixed[trial.number], "group": "fixed"}
        return {"group": "search"}


def define_by_run(part: Part) -> DefineByRun:
    return DefineByRun(space=dict(part.space), fixed=tuple(dict(run) for run in part.fixed))


def _suggest_one(trial: optuna.Trial, name: str, spec: tuple) -> Any:
    kind = spec[0]
    if kind == "categorical":
        return trial.suggest_categorical(name, spec[1])
    if kind == "int":
        return trial.suggest_int(name, spec[1], spec[2])
    if kind == "loguniform":
        return trial.suggest_float(name, spec[1], spec[2], log=True)
    if kind == "uniform":
        return trial.suggest_float(name, spec[1], spec[2])
    raise ValueError(f"unknown space kind {kind!r} for {name!r}")


class BudgetAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells PRUNED, not COMPLETE, for a trial that stopped before `max_t` iterations."""

    def __init__(self, *args: Any, max_t: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._max_t = int(max_t)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if (
            not error
            and result
            and trial_id not in self._completed_trials
            and result.get(TRAINING_ITERATION, self._max_t) < self._max_t
        ):
            ot_trial = self._ot_trials[trial_id]
            self._ot_study.tell(ot_trial, None, state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)


class FixedRunsASHA(ASHAScheduler):
    """ASHA that never stops a fixed homework run, nor a trial at its last epoch.

    Fixed runs: the report needs their full learning curves; their results still enter the rungs, so they set
    the bar that search trials are cut against. Last epoch: plain ASHA answers STOP when a trial reaches max_t,
    which ends the trial at its final report, before it writes its artefacts and closes its MLflow run; the
    trainable stops by itself there anyway.
    """

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if trial.config.get("group") == "fixed" or result.get(self._time_attr, 0) >= self._max_t:
            return TrialScheduler.CONTINUE
        return decision


def build_searcher(part: Part, seed: int) -> BudgetAwareOptunaSearch:
    """TPE with constant liar, so parallel trials don't all sample the same spot while others run."""
    points, _ = split_fixed(part)
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=max(4, len(points) // 2))
    return BudgetAwareOptunaSearch(
        space=define_by_run(part),
        metric=part.metric,
        mode=part.mode,
        points_to_evaluate=points or None,
        sampler=sampler,
        max_t=part.epochs,
    )


def build_scheduler(part: Part, name: str) -> TrialScheduler | None:
    if name == "none":
        return None
    return FixedRunsASHA(
        time_attr=TRAINING_ITERATION,
        max_t=part.epochs,
        grace_period=min(part.grace_period, part.epochs),
        reduction_factor=2,
    )
