"""A trial's state as every reader says it (`study show`, `open_study`, the report): COMPLETE, PRUNED, FAIL, RUNNING.

Optuna's state where the study folder's storage has the trial (the searcher tells Optuna PRUNED for a trial ASHA
stopped, FAIL for one that errored); else from its MLflow run: FAILED is FAIL, RUNNING is RUNNING, and a finished
run tagged `stopped_early` by the scheduler is PRUNED. A pruned trial ran to no end of its own: it is not finished
(complete), whatever MLflow's run status says.
"""
from __future__ import annotations

from pathlib import Path

from analysis.results import RunInfo
from analysis.store import optuna_storage, reading
from trainables.names import OPTUNA_DB, RAY_TRIAL_ATTR, STOPPED_TAG, STUDY_STATE


def optuna_states(folder: str | Path | None) -> dict[str, str]:
    """Ray trial id -> Optuna state (COMPLETE, PRUNED, FAIL, RUNNING), from the study folder's storage, read-only.
    A folder made by `study run` (with study.json) has one; a bare MLflow store may not (states from MLflow then)."""
    import optuna

    path = None if folder is None else Path(folder) / OPTUNA_DB
    if path is None or not (path.exists() or (Path(folder) / STUDY_STATE).exists()):
        return {}
    storage = optuna_storage(path)
    with reading(path):
        return {t.user_attrs[RAY_TRIAL_ATTR]: t.state.name
                for s in optuna.get_all_study_summaries(storage)
                for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials(deepcopy=False)
                if RAY_TRIAL_ATTR in t.user_attrs}


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
