"""MLflow: one parent run per study, one child run per trial, logged from inside the trial.

Logging happens in the trial (plain MlflowClient), not through Ray's MLflowLoggerCallback: after a restore the
callback opens a new run for a resumed trial and leaves the old one RUNNING. Here a trial finds its run by its
Ray trial id (a tag, stable across restores and retries) and keeps logging into it.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from study.space import storage_url
from study.studyfile import space_spec
from trainables.names import (ARTIFACTS, COMMIT_TAG, EPOCH_TIME, PARENT_TAG, STORAGE_TAG, TRAIN_TIME_TAG,
                              TRIAL_TAG, embedded_uri, local_path)



@dataclass(frozen=True)
class TrackingInfo:
    """What a trial needs to find its place in the store; sent to every trial with tune.with_parameters."""

    uri: str
    experiment_id: str
    parent_run_id: str
    git_commit: str
    # The experiment's artefact root as MLflow recorded it (absolute) and the folder that holds it now: set when
    # the root is the study folder's artifacts/ (`with_artifacts`), so a trial of a copied or moved folder writes its
    # files into the folder it runs in, never into the original's.
    artifact_location: str | None = None
    artifacts: str | None = None


def default_uri(study_dir: Path) -> str:
    """SQLite under the study folder: embedded (no server) and accepted by MLflow 3 without extra settings."""
    return embedded_uri(study_dir)


def keeps_artifacts(uri: str) -> bool:
    """Whether the study folder holds the runs' files: for every store but a tracking server (which stores them
    itself). MLflow's default root for a database store is ./mlruns of the working directory: never ours."""
    return urlsplit(uri).scheme.split("+")[0] not in ("http", "https", "databricks")


def with_artifacts(info: TrackingInfo, folder: str | Path) -> TrackingInfo:
    """`info` with the folder that holds its experiment's artefact root now, where that root is the study folder's
    artifacts/ as it was recorded when the study began (the parent run's `study.storage` tag): a folder that was
    copied or moved since then keeps writing into itself. Other roots (a server's, ./mlruns of an older study)
    are left to MLflow."""
    if not keeps_artifacts(info.uri):
        return info
    client = MlflowClient(info.uri)
    location = client.get_experiment(info.experiment_id).artifact_location
    recorded = client.get_run(info.parent_run_id).data.tags.get(STORAGE_TAG)
    if not recorded or local_path(location) != Path(recorded) / ARTIFACTS:
        return info
    return dataclasses.replace(info, artifact_location=location, artifacts=str(Path(folder).resolve() / ARTIFACTS))


def _run_folder(info: TrackingInfo, client: MlflowClient, run_id: str) -> Path | None:
    """The local folder of a run's artefacts in the study folder where it lies now (None: MLflow's own place)."""
    if not info.artifacts:
        return None
    root, run = local_path(info.artifact_location), local_path(client.get_run(run_id).info.artifact_uri)
    try:
        return Path(info.artifacts) / run.relative_to(root)
    except (TypeError, ValueError):
        return None


def log_artifacts(info: TrackingInfo, run_id: str, local_dir: Path, artifact_path: str) -> None:
    """The files of `local_dir` as the run's artefacts under `artifact_path`: copied into the study folder where it
    lies now (MLflow's local layout, <root>/<run id>/artifacts/...), else logged through MLflow."""
    if not (Path(local_dir).is_dir() and any(Path(local_dir).iterdir())):
        return
    client = MlflowClient(info.uri)
    folder = _run_folder(info, client, run_id)
    if folder is None:
        client.log_artifacts(run_id, str(local_dir), artifact_path=artifact_path)
    else:
        shutil.copytree(local_dir, folder / artifact_path, dirs_exist_ok=True)


def log_text(info: TrackingInfo, run_id: str, text: str, file_name: str) -> None:
    """One text file as a run's artefact, where `log_artifacts` puts files."""
    client = MlflowClient(info.uri)
    folder = _run_folder(info, client, run_id)
    if folder is None:
        client.log_text(run_id, text, file_name)
    else:
        (folder / file_name).parent.mkdir(parents=True, exist_ok=True)
        (folder / file_name).write_text(text)


def git_commit() -> str:
    """The commit of this checkout, '-dirty' when it has changes, 'unknown' outside git (an installed copy)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_study(uri: str, name: str, tags: dict[str, str], artifact_location: str | None = None,
                params: dict[str, str] | None = None, files: dict[str, Any] | None = None) -> TrackingInfo:
    """Create the experiment (named after the study) and its parent run, with the study's settings on it.

    `artifact_location`: where the runs' files go. MLflow's default for a local store is ./mlruns of whatever
    folder the command ran in; a study passes its own folder so that it holds everything it made.
    `params` (`study_params`) say how the study ran; `files` are JSON documents logged on the parent run
    (`search_space.json` from `search_spaces`), so the MLflow UI alone shows what was searched.
    """
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    experiment_id = exp.experiment_id if exp else client.create_experiment(name, artifact_location=artifact_location)
    parent = client.create_run(experiment_id, run_name=name, tags=tags)
    run_id = parent.info.run_id
    commit = git_commit()
    if params:
        client.log_batch(run_id, params=[Param(k, _param(v)) for k, v in sorted({**params, "git_commit": commit}.items())])
    for file_name, doc in (files or {}).items():
        client.log_text(run_id, doc if isinstance(doc, str) else json.dumps(doc, indent=2, default=str), file_name)
    return TrackingInfo(uri=uri, experiment_id=experiment_id, parent_run_id=run_id, git_commit=commit)


# StudySpec fields that are the study's running state, not its settings.
STATE_FIELDS = ("experiment_id", "parent_run_id", "git_commit", "done", "extra_fixed")


def public_uri(uri: str | None) -> str | None:
    """A URI without user, password, query or fragment: what may be shown (an MLflow URI can carry a token)."""
    if not uri or "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if not (parts.username or parts.password or parts.query or parts.fragment):
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def study_params(settings: dict[str, Any], parts: list[Any]) -> dict[str, str]:
    """The parent run's params: every setting of the study (a StudySpec as a dict) and each part's effective values.

    A setting left to the preset is logged as 'preset'; `<part>.<key>` says what the part actually ran with.
    URIs lose any credentials; the address is 'local' for a cluster the study started itself.
    """
    out: dict[str, Any] = {k: v for k, v in settings.items() if k not in STATE_FIELDS}
    out["mlflow_uri"] = public_uri(out.get("mlflow_uri"))
    out["address"] = public_uri(out.get("address")) or "local"
    out["extra_fixed_runs"] = len(settings.get("extra_fixed") or [])
    for key in ("num_samples", "max_concurrent", "scheduler", "epochs"):
        if out.get(key) is None:
            out[key] = "auto" if key == "max_concurrent" else "file"
    if settings.get("study_dir"):
        out["optuna_storage"] = storage_url(settings["study_dir"])
    for part in parts:
        out.update({f"{part.name}.{k}": v for k, v in {
            "epochs": part.epochs, "num_samples": part.num_samples, "fixed_runs": len(part.fixed),
            "trials": part.total_trials, "scheduler": part.scheduler, "metric": part.metric, "mode": part.mode,
            "grace_period": part.grace_period, "trainable": part.trainable}.items()})
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in out.items()}


def search_spaces(parts: list[Any]) -> dict[str, Any]:
    """Each part's search as run: space, objective, budget and the fixed runs given to Optuna first."""
    return {part.name: {"trainable": part.trainable,
                        "space": {k: space_spec(d) for k, d in part.space.items()}, "metric": part.metric,
                             "mode": part.mode, "epochs": part.epochs, "num_samples": part.num_samples,
                             "scheduler": part.scheduler, "grace_period": part.grace_period,
                             "constants": part.constants, "fixed": part.fixed}
            for part in parts}


def finish_study(info: TrackingInfo, status: str, summary: dict[str, Any]) -> None:
    client = MlflowClient(info.uri)
    metrics = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    client.log_batch(info.parent_run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    log_text(info, info.parent_run_id, json.dumps(summary, indent=2, default=str), "study_summary.json")
    client.set_terminated(info.parent_run_id, status=status)


def trial_run(info: TrackingInfo, trial_id: str, trial_name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
    """The trial's child run: found by trial id when it exists (resume, retry), else created; set RUNNING. A
    found run gets `tags` again: a retry on another node names the node it goes on on (`ray.node_id`)."""
    client = MlflowClient(info.uri)
    found = client.search_runs(
        [info.experiment_id],
        filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{PARENT_TAG}` = '{info.parent_run_id}'",
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        return run_id
    all_tags = {PARENT_TAG: info.parent_run_id, TRIAL_TAG: trial_id, COMMIT_TAG: info.git_commit, **tags}
    run = client.create_run(info.experiment_id, run_name=trial_name, tags=all_tags)
    client.log_batch(run.info.run_id, params=[Param(k, _param(v)) for k, v in sorted(params.items())])
    return run.info.run_id


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]


def log_epoch(uri: str, run_id: str, metrics: dict[str, Any], step: int) -> None:
    """One batch call per epoch: every numeric metric with the epoch as its step."""
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    MlflowClient(uri).log_batch(run_id, metrics=batch)


def end_trial(uri: str, run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
    """Close a trial's run (its files first: `log_artifacts`). A finished run that reported its epochs' training
    times gets their sum as a tag (`TRAIN_TIME_TAG`), so a reader has `train_s` without reading every run's curve
    (one request here, at the trial's end, instead of one per trial each time the study is read)."""
    client = MlflowClient(uri)
    tags = dict(tags or {})
    if status == "FINISHED":
        by_step = {m.step: m.value for m in sorted(client.get_metric_history(run_id, EPOCH_TIME),
                                                   key=lambda m: (m.step, m.timestamp))}
        if by_step:  # a resumed trial may re-log a step: its latest value, as readers keep it
            tags[TRAIN_TIME_TAG] = repr(float(np.array([by_step[k] for k in sorted(by_step)], np.float64).sum()))
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
    client.set_terminated(run_id, status=status)
