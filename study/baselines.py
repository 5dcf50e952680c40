"""A part's baselines: fitted once per data setting its trials trained on, logged as MLflow runs.

What a baseline is belongs to the trainable (`Trainable.baseline_setting` and `Trainable.baselines`; the COVID
ones are trainables.covid_hooks): the setting is what decides the data a baseline sees (for COVID the windows,
labels and splits, not the model inputs), read from the configs the trials ran with, so the baselines match what
was trained, whatever the searcher chose; a resumed study logs only the settings that have no baseline runs yet.

Each row a trainable's `baselines` returns (a `baseline` name, the `split` it was scored on, numbers, optional
`params` and `run_name`) is one run under the study's parent run, tagged `study.baseline=<name>` and
`trainable=baseline`, with the setting as params. The fits run as Ray tasks, one CPU each, so they spread over
the cluster like trials do.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from study.studyfile import Part
from study.tracking import TrackingInfo
from trainables.names import (BASELINE, BASELINE_KEY_TAG, BASELINE_TAG, COMMIT_TAG, PARENT_TAG, PART_TAG, STUDY_KEYS,
                              TRAINABLE_TAG)
from trainables.trainable import Trainable


def key_of(setting: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(setting, sort_keys=True, default=str).encode()).hexdigest()[:16]


def settings_of(plugin: Trainable, configs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The distinct baseline settings of the trials' configs, by key."""
    out = {}
    for config in configs:
        setting = plugin.baseline_setting(plugin.make_config({k: v for k, v in config.items() if k not in STUDY_KEYS}))
        if setting is not None:
            out[key_of(setting)] = setting
    return out


def log_baselines(info: TrackingInfo, part: Part, configs: list[dict[str, Any]], data: Any) -> tuple[int, int]:
    """Fit and log the baselines of every setting of `configs` (the part's trials that did not error: a FAILED
    trial's setting may be one nothing can train on) that has none yet. Returns (settings fitted, runs logged)."""
    client = MlflowClient(info.uri)
    settings = settings_of(part.plugin, configs)
    done = {run.data.tags.get(BASELINE_KEY_TAG) for run in _baseline_runs(client, info)}
    todo = {k: s for k, s in settings.items() if k not in done}
    if not todo:
        return 0, 0
    rows = _fit_all(part.plugin, list(todo.values()), data)
    logged = 0
    for (key, setting), fitted in zip(todo.items(), rows):
        for row in fitted:
            _log_one(client, info, part.name, key, setting, row)
            logged += 1
    return len(todo), logged


def _baseline_runs(client: MlflowClient, info: TrackingInfo) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([info.experiment_id], f"tags.`{PARENT_TAG}` = '{info.parent_run_id}' "
                                  f"and tags.`{BASELINE_TAG}` != ''", max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _fit_all(plugin: Trainable, settings: list[dict[str, Any]], data: Any) -> list[list[dict[str, Any]]]:
    """In parallel as Ray tasks when Ray is up (one CPU each), else one after another."""
    import ray

    if not ray.is_initialized():
        return [plugin.baselines(s, data) for s in settings]
    remote = ray.remote(num_cpus=1)(plugin.baselines)
    shared = ray.put(data)
    return ray.get([remote.remote(s, shared) for s in settings])


def _log_one(client: MlflowClient, info: TrackingInfo, part: str, key: str, setting: dict[str, Any],
             row: dict[str, Any]) -> None:
    name, split = row["baseline"], row["split"]
    tags = {PARENT_TAG: info.parent_run_id, BASELINE_TAG: name, BASELINE_KEY_TAG: key, TRAINABLE_TAG: BASELINE,
            PART_TAG: part, COMMIT_TAG: info.git_commit}
    run = client.create_run(info.experiment_id, run_name=row.get("run_name", f"{name} {split}"), tags=tags)
    params = {**setting, **row.get("params", {}), "split": split, "baseline": name}
    metrics = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    client.log_batch(run.info.run_id, params=[Param(k, v if isinstance(v, str) else json.dumps(v))
                                              for k, v in sorted(params.items())],
                     metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
                     tags=[RunTag("split", split)])
    client.set_terminated(run.info.run_id, "FINISHED")
