"""A trial's state as every reader says it (`study show`, `open_study`, the report): COMPLETE, PRUNED, FAIL, RUNNING.

Optuna's state where the study folder's storage has the trial (the searcher tells Optuna PRUNED for a trial ASHA
stopped, FAIL for one that errored); else from its MLflow run: FAILED is FAIL, RUNNING is RUNNING, and a finished
run tagged `stopped_early` by the scheduler is PRUNED. A pruned trial ran to no end of its own: it is not finished
(complete), whatever MLflow's run status says.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from analysis.results import RunInfo
from analysis.store import OPTUNA_TABLES, read_only_sqlite
from data.errors import DataError
from trainables.names import OPTUNA_DB, RAY_TRIAL_ATTR, STOPPED_TAG, STUDY_STATE

# Optuna's trial states as its storage holds them (the names of optuna.trial.TrialState).
STATES = ("RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING")


def optuna_states(folder: str | Path | None) -> dict[str, str]:
    """Ray trial id -> Optuna state (COMPLETE, PRUNED, FAIL, RUNNING), from the study folder's storage, read-only.
    A folder made by `study run` (with study.json) has one; a bare MLflow store may not (states from MLflow then).

    One SQL query on the storage's tables (`trials`, `trial_user_attributes`), not Optuna's API: loading every
    trial through `optuna.load_study(...).get_trials()` took 11 s of a 1,000-trial study's `study show` on 2 cores
    (Optuna and SQLAlchemy imported, every FrozenTrial built), for a state and an attribute per trial; this query
    takes milliseconds. tests/test_store_reading.py holds it equal to Optuna's own reading of the same storage."""
    path = None if folder is None else Path(folder) / OPTUNA_DB
    if path is None or not (path.exists() or (Path(folder) / STUDY_STATE).exists()):
        return {}
    with read_only_sqlite(path, "Optuna storage", OPTUNA_TABLES) as con:
        try:
            rows = con.execute("SELECT a.value_json, t.state FROM trials t JOIN trial_user_attributes a "
                               "ON a.trial_id = t.trial_id WHERE a.key = ?", (RAY_TRIAL_ATTR,)).fetchall()
        except sqlite3.Error as err:
            raise DataError(f"not a readable Optuna storage ({err})", path) from None
    found = {}
    for value, state in rows:
        trial_id = json.loads(value)
        if state not in STATES:
            raise DataError(f"not a readable Optuna storage (trial {trial_id}: state {state!r})", path)
        found[str(trial_id)] = state
    return found


def trial_state(run: RunInfo, states: dict[str, str]) -> str:
    """The run's state: Optuna's (`states`, from `optuna_states`), else what its MLflow run says."""
    found = states.get(run.trial_id)
    if found:
        return found
    if run.status == "FAILED":
        return "FAIL"
    if run.status == "RUNNING":
        return "RUNNING"
    return "PRUNED" if run.tags.get(STOPPED_TAG, "").startswith("scheduler") else "COMPLETE"
