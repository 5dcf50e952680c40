"""The COVID baselines of a study: fitted once per data setting its trials trained on, logged as MLflow runs.

A data setting is everything that decides the windows, labels and splits (date range, set C, L, label rule,
split, fractions, split seed), not the model inputs (`norm`, `features`), which the baselines do not use. The
settings are read back from the trials' own MLflow params, so the baselines match what was trained, whatever the
searcher chose, and a resumed study logs only the settings it has no baseline runs for yet.

Each (baseline, evaluated split, setting) is one run under the study's parent run, tagged `study.baseline=<name>`
and `trainable=baseline`, with the setting as params (`split` = the split it was scored on: the trials' configured
split and the time split) and train/val/test accuracy as metrics. The fits run as Ray tasks, one CPU each, so they
spread over the cluster like trials do.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from data.sequence_data import CovidDataConfig, CovidSource
from study.tracking import TrackingInfo
from trainables.registry import BASELINE, BASELINE_TAG, COMMIT_TAG, PARENT_TAG, TRAINABLE_TAG

KEY_TAG = "study.baseline_key"
# CovidDataConfig fields that do not change the windows, labels or splits.
NOT_DATA = ("data_dir", "norm", "features")


def setting_of(params: dict[str, str]) -> dict[str, Any] | None:
    """The data setting of a trial from its logged params (strings; non-strings were logged as JSON)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(CovidDataConfig):
        if f.name in NOT_DATA:
            continue
        if f.name not in params:
            return None
        text = params[f.name]
        out[f.name] = text if f.type == "str" else json.loads(text)
    return out


def key_of(setting: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16]


def _fit(setting: dict[str, Any], source: CovidSource) -> list[dict[str, Any]]:
    from data.sequence_data import build_sequence_data
    from trainables.baselines import fit_baselines

    data = build_sequence_data(CovidDataConfig(**setting), source=source)
    return fit_baselines(data)


def _child_runs(client: MlflowClient, info: TrackingInfo, extra: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([info.experiment_id], f"tags.`{PARENT_TAG}` = '{info.parent_run_id}' {extra}",
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def log_baselines(info: TrackingInfo, source: CovidSource) -> tuple[int, int]:
    """Fit and log the baselines of every data setting the study's sequence trials used and that has none yet.

    Returns (settings fitted now, runs logged now).
    """
    client = MlflowClient(info.uri)
    # A FAILED trial's setting may be one no model can train on (an L longer than the series): fitting baselines
    # on it would fail the same way and end the study.
    trials = [r for r in _child_runs(client, info, f"and tags.{TRAINABLE_TAG} = 'covid'") if r.info.status != "FAILED"]
    settings = {}
    for run in trials:
        setting = setting_of(run.data.params)
        if setting is not None:
            settings[key_of(setting)] = setting
    done = {run.data.tags.get(KEY_TAG) for run in _child_runs(client, info, f"and tags.`{BASELINE_TAG}` != ''")}
    todo = {k: s for k, s in settings.items() if k not in done}
    if not todo:
        return 0, 0
    rows = _fit_all(list(todo.values()), source)
    logged = 0
    for (key, setting), fitted in zip(todo.items(), rows):
        for row in fitted:
            _log_one(client, info, key, setting, row)
            logged += 1
    return len(todo), logged


def _fit_all(settings: list[dict[str, Any]], source: CovidSource) -> list[list[dict[str, Any]]]:
    """In parallel as Ray tasks when Ray is up (one CPU each), else one after another."""
    import ray

    if not ray.is_initialized():
        return [_fit(s, source) for s in settings]
    remote = ray.remote(num_cpus=1)(_fit)
    shared = ray.put(source)
    return ray.get([remote.remote(s, shared) for s in settings])


def _log_one(client: MlflowClient, info: TrackingInfo, key: str, setting: dict[str, Any], row: dict[str, Any]) -> None:
    name, split = row["baseline"], row["split"]
    tags = {PARENT_TAG: info.parent_run_id, BASELINE_TAG: name, KEY_TAG: key, TRAINABLE_TAG: BASELINE,
            COMMIT_TAG: info.git_commit}
    run = client.create_run(info.experiment_id, run_name=f"{name} {split} L={setting['seq_len']}", tags=tags)
    params = {**setting, "trained_split": setting["split"], "split": split, "baseline": name}
    metrics = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    client.log_batch(run.info.run_id, params=[Param(k, v if isinstance(v, str) else json.dumps(v))
                                              for k, v in sorted(params.items())],
                     metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
                     tags=[RunTag("split", split)])
    client.set_terminated(run.info.run_id, "FINISHED")
