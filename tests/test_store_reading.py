"""The study's own reading of its stores' tables (analysis.mlflow_sqlite, analysis.trial_states) gives what MLflow's
and Optuna's own APIs give on the same files: every run's tags, params, latest metrics and curves, and every trial's
state. If a new MLflow or Optuna stored these differently, these tests fail before a reader shows a wrong number."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from analysis import mlflow_sqlite
from analysis.results import load_study
from analysis.store import mlflow_snapshot, sqlite_file
from analysis.trial_states import optuna_states
from analysis_fixture import build_store
from trainables.names import OPTUNA_DB, RAY_TRIAL_ATTR


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The analysis fixture's store (a study's layout, a failed run, baselines), plus the odd cases: a step logged
    twice (a resumed trial), a NaN value, a deleted run."""
    root = tmp_path_factory.mktemp("store")
    uri = build_store(root)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("homework-test")
    run = client.search_runs([exp.experiment_id], "tags.trainable = 'covid'", max_results=1)[0]
    client.log_batch(run.info.run_id, metrics=[Metric("val_acc", 0.25, 1, 1), Metric("val_acc", 0.5, 2, 1),
                                               Metric("odd", math.nan, 3, 2)])
    gone = client.create_run(exp.experiment_id, run_name="deleted")
    client.log_metric(gone.info.run_id, "x", 1.0)
    client.delete_run(gone.info.run_id)
    return uri, exp.experiment_id


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_runs_are_what_search_runs_gives(store):
    uri, exp_id = store
    expected = {r.info.run_id: r for r in MlflowClient(uri).search_runs([exp_id], max_results=1000)}
    got = {r.run_id: r for r in mlflow_sqlite.runs(mlflow_snapshot(sqlite_file(uri)), exp_id)}
    assert set(got) == set(expected) and len(got) > 50  # the deleted run in neither
    for run_id, run in expected.items():
        mine = got[run_id]
        assert (mine.name, mine.status, mine.start_time, mine.artifact_uri) == (
            run.info.run_name, run.info.status, run.info.start_time, run.info.artifact_uri)
        assert mine.tags == run.data.tags and mine.params == run.data.params
        assert mine.metrics.keys() == run.data.metrics.keys()
        assert all(_same(mine.metrics[k], v) for k, v in run.data.metrics.items())


def test_curves_are_what_get_metric_history_gives(store):
    uri, exp_id = store
    client = MlflowClient(uri)
    runs = client.search_runs([exp_id], max_results=1000)
    got = mlflow_sqlite.histories(mlflow_snapshot(sqlite_file(uri)), [r.info.run_id for r in runs])
    checked = 0
    for run in runs:
        assert set(got[run.info.run_id]) == set(run.data.metrics)
        for key in run.data.metrics:
            points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
            by_step = {m.step: m.value for m in points}  # a step logged twice: the later value
            steps, values = got[run.info.run_id][key]
            assert list(steps) == sorted(by_step) and steps.dtype == np.int64 and values.dtype == np.float64
            assert all(_same(v, by_step[s]) for s, v in zip(steps, values))
            checked += 1
    assert checked > 300


def test_load_study_reads_without_mlflow_and_curves_only_when_asked(store):
    """A study of an SQLite store is read without importing MLflow; the curves are read on first use, all at once."""
    uri, _ = store

    code = ("import sys; from analysis.results import load_study; r = load_study(%r); "
            "assert 'mlflow' not in sys.modules and 'sqlalchemy' not in sys.modules, 'imported'; "
            "print(len(r.runs), sum(len(x.history) > 0 for x in r.runs))" % uri)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    n, with_curves = map(int, out.stdout.split())
    assert n == with_curves > 0
    results = load_study(uri)
    run = results.runs[0]
    assert repr(run.history) == "Lazy(not read yet)"
    assert len(run.history) == len(run.metrics) and repr(run.history) != "Lazy(not read yet)"


def test_optuna_states_are_optunas(tmp_path):
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / OPTUNA_DB}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    made = {}
    for name, states in (("a", ["COMPLETE", "PRUNED", "FAIL"]), ("b", ["COMPLETE", "RUNNING", "WAITING"])):
        study = optuna.create_study(study_name=name, storage=storage)
        for i, state in enumerate(states):
            trial_id = f"{name}{i:07d}"
            kwargs = {"value": 0.5 * i} if state == "COMPLETE" else {}
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState[state], params={},
                                                      distributions={}, user_attrs={RAY_TRIAL_ATTR: trial_id},
                                                      **kwargs))
            made[trial_id] = state
        study.add_trial(optuna.trial.create_trial(value=1.0, params={}, distributions={}))  # no Ray trial: none
    expected = {t.user_attrs[RAY_TRIAL_ATTR]: t.state.name
                for s in optuna.get_all_study_summaries(storage)
                for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
                if RAY_TRIAL_ATTR in t.user_attrs}
    assert optuna_states(tmp_path) == expected == made

