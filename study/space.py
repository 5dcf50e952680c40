"""The search of one part: its Optuna searcher (`study.searcher.OptunaSearcher`) and its ASHA scheduler.

Where the Optuna study lives: in an SQLite file of the study folder (`optuna.db`, one Optuna study per part),
written as the search runs, so that optuna-dashboard and the report read the search itself.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from study.searcher import OptunaSearcher, fixed_point, open_storage
from study.studyfile import Part
from trainables.names import OPTUNA_DB

TRAINING_ITERATION = "training_iteration"

__all__ = ["FixedRunsASHA", "InExperimentFIFO", "build_scheduler", "build_searcher", "keep_in_experiment",
           "open_storage", "split_fixed", "storage_url"]


def storage_url(study_dir: str | Path) -> str:
    """The study folder's Optuna storage; `optuna-dashboard <this URL>` opens it."""
    return f"sqlite:///{Path(study_dir).resolve() / OPTUNA_DB}"


def split_fixed(part: Part) -> tuple[list[dict], list[dict]]:
    """Fixed runs as Optuna points (only keys of the space, in range) and the remainder returned as constants."""
    points = [fixed_point(part.space, run) for run in part.fixed]
    extras = [{k: v for k, v in run.items() if k not in point} for run, point in zip(part.fixed, points)]
    return points, extras


def keep_in_experiment(tune_controller: Any, trial: Any) -> None:
    """A new trial's folder in the experiment the controller runs, where that experiment lies now.

    Ray 2.60 restores a moved or copied experiment folder where it lies, and its trials with it, but the trials its
    searcher creates after the restore take the storage recorded in the pickled search state: the ORIGINAL folder.
    Seen with a Tune experiment copied and restored: every new trial's path was under the original, its
    checkpoints were written there (or, the original gone, the trial failed: "Unable to set up cluster storage").
    So each trial added is moved into the controller's experiment folder, as Ray itself does for the trials it
    restores (a copy of the trial's storage with the folder changed, `Trial.set_storage`)."""
    experiment = getattr(tune_controller, "experiment_path", None)
    if not experiment or getattr(trial, "storage", None) is None:
        return
    experiment = Path(experiment)
    if Path(trial.remote_experiment_path) == experiment:
        return
    storage = copy.copy(trial.storage)
    storage.storage_fs_path = experiment.parent.as_posix()
    storage.experiment_dir_name = experiment.name
    trial.set_storage(storage)


class InExperimentFIFO(FIFOScheduler):
    """Tune's default scheduler (first in, first out) with new trials kept in the experiment's folder
    (`keep_in_experiment`): a part without ASHA."""

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        keep_in_experiment(tune_controller, trial)
        super().on_trial_add(tune_controller, trial)


class FixedRunsASHA(ASHAScheduler):
    """ASHA that never stops a fixed homework run, nor a trial at its last epoch.

    Fixed runs: the report needs their full learning curves; their results still enter the rungs, so they set
    the bar that search trials are cut against. Last epoch: plain ASHA answers STOP when a trial reaches max_t,
    which ends the trial at its final report, before it writes its artefacts and closes its MLflow run; the
    trainable stops by itself there anyway.
    """

    def __init__(self, *, time_attr: str = TRAINING_ITERATION, max_t: int = 100, **kwargs: Any):
        super().__init__(time_attr=time_attr, max_t=max_t, **kwargs)
        self.budget_attr, self.budget = time_attr, max_t  # ours: ASHA keeps its own copies private

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        keep_in_experiment(tune_controller, trial)
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if trial.config.get("group") == "fixed" or result.get(self.budget_attr, 0) >= self.budget:
            return TrialScheduler.CONTINUE
        return decision


def build_searcher(part: Part, seed: int, storage: str | None = None) -> OptunaSearcher:
    """The part's searcher: fixed runs first and in order, then TPE (seeded, constant liar).

    `storage`: an Optuna RDB URL (`storage_url(study_dir)`); the part's study is named after the part.
    Without one, the study is kept in memory (no resume).
    """
    return OptunaSearcher(space=dict(part.space), fixed=whole_fixed_runs(part), metric=part.metric,
                          mode=part.mode, seed=seed, max_t=part.epochs, study_name=part.name,
                          storage_url=storage)


def whole_fixed_runs(part: Part) -> list[dict[str, Any]]:
    """Each fixed run with every searched key: a key it leaves out takes the part's constant, else the trainable's
    default. Otherwise Optuna would sample that key for the fixed run (weight decay and dropout for the homework's
    plain runs) and record, and TPE learn from, a value the run may not have used."""
    defaults = {**part.plugin.full_config({}), **part.constants}
    return [{**{k: defaults[k] for k in part.space if k not in run and k in defaults}, **run} for run in part.fixed]


def build_scheduler(part: Part, name: str) -> TrialScheduler:
    if name == "none":
        return InExperimentFIFO()
    return FixedRunsASHA(
        time_attr=TRAINING_ITERATION,
        max_t=part.epochs,
        grace_period=min(part.grace_period, part.epochs),
        reduction_factor=2,
    )
