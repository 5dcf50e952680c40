"""A Ray Tune searcher that drives an Optuna study through Optuna's ask-and-tell interface.

Why not Ray's `OptunaSearch`: it tells Optuna COMPLETE with the last reported value even when ASHA stopped the
trial after a few epochs (TPE would rank a 2-epoch score as a full-budget one), and it keeps its state in
objects it pickles, which a study folder's storage can be ahead of after a kill. `OptunaSearcher` keeps all of
its state in the Optuna storage and uses only public Ray and Optuna calls:

- fixed runs are enqueued (`study.enqueue_trial`) and come first, in order; the searched trials follow
  (`study.ask(fixed_distributions=space)`, which suggests every key in the space's order);
- every epoch is an intermediate value (`trial.report(value, step=epoch)`); a trial that ended before `max_t`
  training iterations (ASHA stopped it) is told PRUNED, so TPE ranks it below complete ones, by how far it got
  and then by its last value; one that stopped itself (its patience ran out: `stopped_by_patience` in its last result)
  is COMPLETE; an error or a missing metric is FAIL;
- each Optuna trial carries user attributes `ray_trial_id` and `group`, and the study its metric, mode, space
  and number of fixed runs, so a reader of the storage (optuna-dashboard, the report) needs nothing else.

Resume: Tune pickles the searcher as built (tuner.pkl; only plain values, the live study is dropped) and later
calls `restore()` with what `save()` wrote (small JSON: which Optuna trial each Ray trial is). The storage may
be ahead of that after a kill; `restore` matches the two so that each Ray trial stays one Optuna trial. The
pickle holds the storage URL of the folder the study began in; a study folder that was copied or moved since is
resumed on its own storage: the driver names it in $STUDY_OPTUNA_STORAGE (`STORAGE_ENV`) for the fit, and a
reopened searcher takes that URL over the pickled one (Tune gives a restored searcher no path to derive it from:
`restore` gets a copy of the state in Ray's session folder).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, distribution_to_json, json_to_distribution
from optuna.trial import TrialState
from ray.tune.search import Searcher

from trainables.names import EARLY_STOPPED, GROUP_ATTR, RAY_TRIAL_ATTR

TRAINING_ITERATION = "training_iteration"
FIXED_ATTR = "fixed_run"          # Optuna trial user attribute: index of the fixed run it is
STATE_VERSION = 1
STORAGE_ENV = "STUDY_OPTUNA_STORAGE"  # the driver's study folder's storage: a reopened searcher's, over the pickled URL


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage that waits for a busy SQLite file (a report or a dashboard reading it) instead of failing."""
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def in_distribution(dist: BaseDistribution, value: Any) -> bool:
    """Whether `value` is a point of `dist` (a fixed run's value outside the space is not given to Optuna)."""
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    try:
        return dist.low <= value <= dist.high  # type: ignore[attr-defined]
    except TypeError:
        return False


def fixed_point(space: dict[str, BaseDistribution], run: dict[str, Any]) -> dict[str, Any]:
    """The part of a fixed run Optuna is given: the keys of the space whose value lies in its distribution."""
    return {k: v for k, v in run.items() if k in space and in_distribution(space[k], v)}


class OptunaSearcher(Searcher):
    """Ray Tune searcher over an Optuna study kept in an RDB storage (or in memory, without resume).

    Parameters are plain values and Optuna distributions; the distributions are held as their JSON, so a pickle
    of the searcher holds nothing but plain values. With `storage_url`, a new searcher deletes a study of the
    same name left in the storage (an attempt whose Tune state was never saved has no Ray trials to match) and
    starts afresh.
    """

    def __init__(self, *, space: dict[str, BaseDistribution], fixed: list[dict[str, Any]], metric: str, mode: str,
                 seed: int, max_t: int, study_name: str, storage_url: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self._space_json = {name: distribution_to_json(dist) for name, dist in space.items()}  # key order kept
        self._fixed = [dict(run) for run in fixed]
        self._base_seed = int(seed)
        self._budget = int(max_t)
        self._name = study_name
        self._url = storage_url
        self._trials: dict[str, int] = {}       # Ray trial id -> Optuna trial number
        self._told: set[str] = set()            # Ray trials whose Optuna trial is finished
        self._reusable: list[int] = []          # Optuna trials asked after the last save, which Tune forgot
        self._db: Any = None                    # live objects: dropped when pickled, reopened from the URL
        self._study: optuna.Study | None = None
        self._handles: dict[str, optuna.Trial] = {}
        self._create()

    # ------------------------------------------------------------------------------------------ the study
    def space(self) -> dict[str, BaseDistribution]:
        return {name: json_to_distribution(text) for name, text in self._space_json.items()}

    def _new_sampler(self, seed: int) -> optuna.samplers.TPESampler:
        """TPE with constant liar, so parallel trials don't all sample the same spot while others run."""
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                          n_startup_trials=max(4, len(self._fixed) // 2))

    def _create(self) -> None:
        """A new study: the fixed runs enqueued in order, the objective and space as study attributes."""
        if self._url:
            self._db = open_storage(self._url)
            if self._name in optuna.get_all_study_names(self._db):
                optuna.delete_study(study_name=self._name, storage=self._db)
        else:
            self._db = optuna.storages.InMemoryStorage()
        study = optuna.create_study(storage=self._db, sampler=self._new_sampler(self._base_seed),
                                    pruner=optuna.pruners.NopPruner(), study_name=self._name,
                                    direction="maximize" if self.mode == "max" else "minimize")
        space = self.space()
        for i, run in enumerate(self._fixed):
            study.enqueue_trial(fixed_point(space, run), user_attrs={GROUP_ATTR: "fixed", FIXED_ATTR: i})
        study.set_user_attr("metric", self.metric)
        study.set_user_attr("mode", self.mode)
        study.set_user_attr("space", json.dumps(self._space_json))
        study.set_user_attr("fixed_runs", len(self._fixed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is marked experimental
            study.set_metric_names([self.metric])
        self._study = study

    def _open(self) -> optuna.Study:
        """The live study; after unpickling, reloaded from the storage URL with a sampler seeded afresh.

        The seed is the study's seed plus the number of trials already stored, so a resumed study does not draw
        the values its first trials drew again.
        """
        if self._study is not None:
            return self._study
        if not self._url:
            raise RuntimeError("an OptunaSearcher without a storage URL cannot be reopened after pickling")
        self._db = open_storage(os.environ.get(STORAGE_ENV) or self._url)
        stored = self._db.get_n_trials(self._db.get_study_id_from_name(self._name))
        self._study = optuna.load_study(study_name=self._name, storage=self._db,
                                        sampler=self._new_sampler(self._base_seed + stored),
                                        pruner=optuna.pruners.NopPruner())
        self._handles = {}
        return self._study

    def _trial(self, number: int) -> optuna.Trial:
        """A handle to the study's existing trial `number`."""
        study = self._open()
        study_id = self._db.get_study_id_from_name(self._name)
        return optuna.Trial(study, self._db.get_trial_id_from_study_id_trial_number(study_id, number))

    def _handle(self, trial_id: str) -> optuna.Trial:
        if trial_id not in self._handles:
            self._handles[trial_id] = self._trial(self._trials[trial_id])
        return self._handles[trial_id]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_db=None, _study=None, _handles={})
        return state

    # ------------------------------------------------------------------------------------------ Tune's calls
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        """The space is the searcher's own (Tune's param_space holds only constants): nothing to take."""
        return False

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        study = self._open()
        if trial_id in self._trials:
            return self._config(self._handle(trial_id))
        if self._reusable:
            # A trial asked for before a kill that Tune no longer remembers: hand it out again, so the sequence
            # of trials (fixed runs first, in order) is what it would have been, with no second Optuna trial.
            trial = self._trial(self._reusable.pop(0))
            if self._finished(trial.number):
                self._told.add(trial_id)
            else:
                trial.set_user_attr(RAY_TRIAL_ATTR, trial_id)
        else:
            trial = study.ask(fixed_distributions=self.space())
            trial.set_user_attr(RAY_TRIAL_ATTR, trial_id)
            if FIXED_ATTR not in trial.user_attrs:
                trial.set_user_attr(GROUP_ATTR, "search")
        self._trials[trial_id] = trial.number
        self._handles[trial_id] = trial
        return self._config(trial)

    def _config(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's config: its params; a fixed run's config is the whole run (keys outside the space too)."""
        index = trial.user_attrs.get(FIXED_ATTR)
        if index is not None:
            return {**trial.params, **self._fixed[int(index)], "group": "fixed"}
        return {**trial.params, "group": "search"}

    def _finished(self, number: int) -> bool:
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return any(t.number == number for t in self._open().get_trials(deepcopy=False, states=finished))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """One intermediate value per epoch (the trainable's own count, which a restored trial continues)."""
        if trial_id not in self._trials or trial_id in self._told:
            return  # unknown, or told before a kill and resumed by Tune: its Optuna record is already final
        value = result.get(self.metric)
        if value is None:
            return
        step = int(result.get("epoch", result.get(TRAINING_ITERATION, 0)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a step re-reported after a resume keeps its first value
            self._handle(trial_id).report(float(value), step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._trials or trial_id in self._told:
            return
        study = self._open()
        if error or not result:
            self._tell(study, trial_id, None, TrialState.FAIL)
            return
        # Tune hands the result on which a scheduler stopped the trial to on_trial_complete only: without this,
        # a trial ASHA stops at its first rung would reach Optuna with no value at all.
        self.on_trial_result(trial_id, result)
        if result.get(TRAINING_ITERATION, self._budget) < self._budget and not result.get(EARLY_STOPPED):
            self._tell(study, trial_id, None, TrialState.PRUNED)
            return
        value = result.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            self._tell(study, trial_id, None, TrialState.FAIL)
        else:
            self._tell(study, trial_id, float(value), TrialState.COMPLETE)

    def _tell(self, study: optuna.Study, trial_id: str, value: float | None, state: TrialState) -> None:
        study.tell(self._handle(trial_id), value, state=state, skip_if_finished=True)
        self._told.add(trial_id)

    # ------------------------------------------------------------------------------------------ resume
    def save(self, checkpoint_path: str) -> None:
        """Which Optuna trial each Ray trial is, and which were told: the storage holds the rest."""
        state = {"version": STATE_VERSION, "study_name": self._name, "trials": self._trials,
                 "told": sorted(self._told)}
        with open(checkpoint_path, "w", encoding="utf-8") as fh:
            json.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Reload the study from its storage and match its trials with the Ray trials Tune remembers.

        Trials the storage finished after the save are not told again (Tune resumes the Ray trial; its results
        are dropped). Trials asked for after the save, which Tune forgot, are handed out again, in order, to the
        next trials Tune asks for, so there is exactly one Optuna trial per Ray trial.
        """
        with open(checkpoint_path, encoding="utf-8") as fh:
            state = json.load(fh)
        if state.get("version") != STATE_VERSION or state.get("study_name") != self._name:
            raise ValueError(f"{checkpoint_path}: not a saved state of the Optuna study {self._name!r}")
        self._study = None
        study = self._open()
        stored = {t.number: t for t in study.get_trials(deepcopy=False)}
        self._trials = {tid: int(n) for tid, n in state["trials"].items() if int(n) in stored}
        self._told = {tid for tid in state["told"] if tid in self._trials} | {
            tid for tid, n in self._trials.items() if stored[n].state.is_finished()}
        claimed = set(self._trials.values())
        self._reusable = [n for n in sorted(stored) if stored[n].state != TrialState.WAITING and n not in claimed]
