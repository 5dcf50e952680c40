"""The search figures read the study folder's Optuna storage; older folders fall back to the MLflow runs."""
from __future__ import annotations

import pytest

from analysis import figures_search
from analysis.results import load_study
from analysis_fixture import build_store
from study.space import build_searcher, storage_url
from study.studyfile import preset_part


@pytest.fixture()
def results(tmp_path):
    results = load_study(build_store(tmp_path))
    results.data_dir = str(tmp_path / "no-data-here")
    return results


def _drive(searcher, part, fixed_value=0.6):
    """What Tune tells the searcher: the fixed runs and one searched trial finish, one is stopped, one fails."""
    n = len(part.fixed)
    for i in range(n + 3):
        searcher.suggest(f"t{i}")
    for i in range(n + 1):
        for epoch in range(1, part.epochs + 1):
            searcher.on_trial_result(f"t{i}", {part.metric: fixed_value + i / 100, "epoch": epoch,
                                               "training_iteration": epoch})
        searcher.on_trial_complete(f"t{i}", {part.metric: fixed_value + i / 100, "training_iteration": part.epochs})
    searcher.on_trial_result(f"t{n + 1}", {part.metric: 0.9, "epoch": 1, "training_iteration": 1})
    searcher.on_trial_complete(f"t{n + 1}", {part.metric: 0.9, "training_iteration": 1})
    searcher.on_trial_complete(f"t{n + 2}", None, error=True)


def test_history_from_mlflow_runs_counts_fixed_and_searched_trials(results):
    """A study folder without an Optuna storage: fixed runs are trials of the study but not searched ones."""
    hist = figures_search.search_history(results, "covid")
    assert hist.source == "MLflow runs"
    n_fixed = len(results.select(trainable="covid", group="fixed"))
    n_search = len([r for r in figures_search.search_trials(results, "covid") if r.group == "search"])
    assert n_fixed and n_search
    assert hist.title == f"{n_fixed + n_search} trials: {n_fixed} fixed, {n_search} searched"
    assert "search trials" not in hist.title
    # the objective comes from the space logged on the parent run, not a constant
    assert figures_search.objective(results, "covid") == ("val_acc", "maximize")


def test_search_figures_read_the_optuna_storage(results, tmp_path):
    """The metric is whatever the study optimised (here validation accuracy), read from the storage."""
    part = preset_part("smoke", "covid")
    _drive(build_searcher(part, seed=0, storage=storage_url(tmp_path)), part)
    results = load_study(results.tracking_uri)  # the parent run's study.storage names tmp_path
    assert results.study_dir == str(tmp_path)

    hist = figures_search.search_history(results, "covid")
    n = len(part.fixed)
    assert hist.source == "optuna storage" and hist.metric == "val_acc" and hist.direction == "maximize"
    assert hist.state == ["COMPLETE"] * (n + 1) + ["PRUNED", "FAIL"]
    assert hist.group == ["fixed"] * n + ["search"] * 3
    assert hist.title == f"{n + 3} trials: {n} fixed, 3 searched (1 stopped early, 1 failed)"
    assert hist.values[n + 1] == pytest.approx(0.9)  # a stopped trial shows the last value it reported
    assert figures_search.objective(results, "covid") == ("val_acc", "maximize")

    imp = figures_search.param_importances(results, "covid")
    assert imp and set(imp) <= set(part.space)
    assert figures_search.fig_covid_search_history(results, tmp_path / "fig").stat().st_size > 0
    assert figures_search.fig_covid_search_importance(results, tmp_path / "fig").stat().st_size > 0
    assert not {"covid_search_history", "covid_search_importance"} & set(results.skipped)
    # The VAE has no study in this storage: its figures fall back to the MLflow runs.
    assert figures_search.search_history(results, "vae").source == "MLflow runs"
