"""Optuna search for Ray Tune: a define-by-run space from a preset, and a searcher that knows about ASHA.

How the searcher learns about stopped trials: Ray's OptunaSearch tells Optuna COMPLETE with the last reported
value even when ASHA stopped the trial after a few epochs, so TPE would rank a 2-epoch score as if it were a
full-budget one. `BudgetAwareOptunaSearch` tells Optuna PRUNED for any trial that ended before `max_t`
training iterations. Every epoch was already reported to the Optuna trial as an intermediate value
(`on_trial_result`), and Optuna's TPE ranks pruned trials below complete ones, ordered by how far they got
and then by their last intermediate value. So a stopped trial still informs the search, as a partial result.

Where the Optuna study lives: in an SQLite file of the study folder (`optuna.db`, one Optuna study per part),
written as the search runs, so that optuna-dashboard and the report read the search itself. Tune pickles the
searcher with its experiment state, and the file may be ahead of that pickle after a kill (a trial asked for,
reported to or told after the last save). On restore the searcher reopens the file by its URL and matches it
with what Tune remembers, so that each Ray trial stays one Optuna trial (see `_resync`).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from study.presets import Part
from trainables.registry import GROUP_ATTR, OPTUNA_DB as STORAGE_FILE, RAY_TRIAL_ATTR

TRAINING_ITERATION = "training_iteration"


def storage_url(study_dir: str | Path) -> str:
    """The study folder's Optuna storage; `optuna-dashboard <this URL>` opens it."""
    return f"sqlite:///{Path(study_dir).resolve() / STORAGE_FILE}"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage that waits for a busy SQLite file (a report or a dashboard reading it) instead of failing."""
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


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
    """OptunaSearch that tells PRUNED, not COMPLETE, for a trial that stopped before `max_t` iterations.

    With `storage_url`, the Optuna study is kept in that RDB storage under `study_name`. A new searcher starts
    a new study there: a record left by an attempt whose Tune state was never saved has no Ray trials to match.
    """

    def __init__(self, *args: Any, max_t: int, storage_url: str | None = None, study_name: str | None = None,
                 **kwargs: Any):
        self._max_t = int(max_t)
        self._storage_url = storage_url
        self._reusable: list[int] = []  # Optuna trial ids asked for after the last save (see _resync)
        storage = None
        if storage_url:
            storage = open_storage(storage_url)
            if study_name in optuna.get_all_study_names(storage):
                optuna.delete_study(study_name=study_name, storage=storage)
        super().__init__(*args, storage=storage, study_name=study_name, **kwargs)

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._reusable:
            # A trial asked for before a kill that Tune no longer remembers: hand it out again, so the sequence
            # of trials (fixed runs first, in order) is what it would have been, with no second Optuna trial.
            ot_trial = optuna.Trial(self._ot_study, self._reusable.pop(0))
            self._ot_trials[trial_id] = ot_trial
            if ot_trial._cached_frozen_trial.state.is_finished():
                self._completed_trials.add(trial_id)
        config = super().suggest(trial_id)
        if self._storage_url and config is not None and trial_id not in self._completed_trials:
            ot_trial = self._ot_trials[trial_id]
            ot_trial.set_user_attr(RAY_TRIAL_ATTR, trial_id)
            ot_trial.set_user_attr(GROUP_ATTR, config.get("group", "search"))
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """One intermediate value per epoch (the trainable's own count, which a restored trial continues)."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials or isinstance(self.metric, list):
            return  # a trial told before a kill and resumed by Tune: its Optuna record is already final
        value = result.get(self.metric)
        if value is None:
            return
        step = int(result.get("epoch", result[TRAINING_ITERATION]))
        ot_trial = self._ot_trials[trial_id]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a step re-reported after a resume keeps its first value
            ot_trial.report(float(value), step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if error:
            self._ot_study.tell(ot_trial, None, state=optuna.trial.TrialState.FAIL)
            self._completed_trials.add(trial_id)
            return
        if result:
            # Tune hands the result on which a scheduler stopped the trial to on_trial_complete only: without
            # this, a trial ASHA stops at its first rung would reach Optuna with no value at all.
            self.on_trial_result(trial_id, result)
        if result and result.get(TRAINING_ITERATION, self._max_t) < self._max_t:
            self._ot_study.tell(ot_trial, None, state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        if self._storage_url:
            self._resync()

    def _resync(self) -> None:
        """Reopen the storage by its URL and match its trials with the restored state.

        The pickled study holds a stale cache, so the study is loaded afresh. Optuna trials this state knows
        get fresh handles; those the storage finished after the save count as completed (Tune will resume
        the Ray trial, and its results are not told twice). Trials asked for after the save, which Tune
        forgot, are handed out again, in order, to the next trials Tune asks for.
        """
        storage = open_storage(self._storage_url)
        self._storage = storage
        self._ot_study = optuna.load_study(study_name=self._study_name, storage=storage, sampler=self._sampler,
                                           pruner=optuna.pruners.NopPruner())
        stored = {t._trial_id: t for t in self._ot_study.get_trials(deepcopy=False)}
        known = {tid: t._trial_id for tid, t in self._ot_trials.items() if t._trial_id in stored}
        self._ot_trials = {tid: optuna.Trial(self._ot_study, oid) for tid, oid in known.items()}
        self._completed_trials = {tid for tid in self._completed_trials if tid in known} | {
            tid for tid, oid in known.items() if stored[oid].state.is_finished()}
        claimed = set(known.values())
        waiting = optuna.trial.TrialState.WAITING
        self._reusable = [t._trial_id for t in sorted(stored.values(), key=lambda t: t.number)
                          if t.state != waiting and t._trial_id not in claimed]


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


def build_searcher(part: Part, seed: int, storage: str | None = None) -> BudgetAwareOptunaSearch:
    """TPE with constant liar, so parallel trials don't all sample the same spot while others run.

    `storage`: an Optuna RDB URL (`storage_url(study_dir)`); the part's study is named after the part. Its
    metric, mode and space are study attributes, so a reader of the storage needs nothing else.
    """
    points, _ = split_fixed(part)
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=max(4, len(points) // 2))
    searcher = BudgetAwareOptunaSearch(
        space=define_by_run(part),
        metric=part.metric,
        mode=part.mode,
        points_to_evaluate=points or None,
        sampler=sampler,
        max_t=part.epochs,
        storage_url=storage,
        study_name=part.kind,
    )
    if storage:
        study = searcher._ot_study
        study.set_user_attr("metric", part.metric)
        study.set_user_attr("mode", part.mode)
        study.set_user_attr("space", json.dumps(part.space))
        study.set_user_attr("fixed_runs", len(part.fixed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is marked experimental
            study.set_metric_names([part.metric])
    return searcher


def build_scheduler(part: Part, name: str) -> TrialScheduler | None:
    if name == "none":
        return None
    return FixedRunsASHA(
        time_attr=TRAINING_ITERATION,
        max_t=part.epochs,
        grace_period=min(part.grace_period, part.epochs),
        reduction_factor=2,
    )
