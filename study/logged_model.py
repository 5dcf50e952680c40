"""A trial's model in MLflow: a logged model of each finished trial's run, and the part's chosen one registered.

- `log_trial_model` (in the trial, at the end of `run_trial`): a trainable with a `Trainable.model` gets an MLflow 3
  LoggedModel of its run, with the run's final metrics linked to it, so `mlflow.search_logged_models` and the
  experiment's Models tab list and rank the trials' models. A trial ASHA stopped (or one that failed) never gets
  there: it logs none.
- `register_chosen` (on the driver, at the end of a part): the chosen trial's logged model becomes a new version
  of the registered model `<study>-<part>` with the alias `chosen`; a resumed or repeated study adds a version.

The model is a pyfunc model of MLflow's "custom flavor" kind: data only (the ModelSpec's files and a JSON naming
the trainable), loaded by the installed module `trainables.pyfunc` (see there why: nothing pickled, nothing from
the store run). Everything goes through a plain MlflowClient on the study's URI, as the trials' logging does
(`study.tracking`): no fluent MLflow state (active run, global tracking URI) in a Ray worker.

Two things MLflow does its own way, worked around with its public API:
- `mlflow.pyfunc.log_model` logs into the fluent active run through the global tracking URI; the steps it takes
  (create the logged model, save, upload, link the run's metrics at the step) are taken here with the client.
- The registry resolves a `models:/<model_id>` source through the global tracking URI, not the client's (it
  created ./mlflow.db in the working directory): a version's source is the model's artefact folder instead.

In the study folder's own store the files are written where the folder lies now (as `tracking.log_artifacts`
does): MLflow records the experiment's artefact root absolutely, so a resumed copy of a moved folder would
otherwise write into the original.
"""
from __future__ import annotations

import importlib.metadata
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.tracking import MlflowClient

from study.tracking import TrackingInfo
from trainables import pyfunc
from trainables.names import (CHOSEN, MODEL_DATA, MODEL_ID_TAG, PARENT_TAG, PART_TAG, PYFUNC_LOADER, TRAINABLE_TAG,
                              TRIAL_TAG, local_path, registered_model)
from trainables.trainable import Trainable

# What the model needs beyond the project, pinned to what logged it. The project is not on a package index: load
# the model where it is installed (`--env-manager local`); `pip_requirements` given, MLflow infers none (slow).
REQUIREMENTS = ("mlflow", "numpy", "pandas", "torch")
BAD_NAME_CHARS = re.compile(r"[/:.%\"']")  # what MLflow refuses in a logged model's name


def requirements() -> list[str]:
    found = []
    for dist in REQUIREMENTS:
        try:
            found.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def model_name(part: str, trial_id: str) -> str:
    """The logged model's name in the Models tab: its part and trial (`covid-1a2b3c4d`)."""
    return BAD_NAME_CHARS.sub("-", f"{part}-{trial_id}")


class ModelFilesMissing(RuntimeError):
    """`train` did not write a file its Trainable.model names: the trial's own error (one line)."""


def check_files(plugin: Trainable, artifact_dir: Path) -> None:
    """Before the trial ends: every file of its trainable's ModelSpec is in artifact_dir (a plugin's mistake fails
    its own trial, never the model's logging)."""
    missing = pyfunc.missing_files(plugin, artifact_dir)
    if missing:
        raise ModelFilesMissing(f"train wrote no {', '.join(map(repr, missing))} into artifact_dir, which its "
                                f"Trainable.model declares (ModelSpec.files)")


def log_trial_model(info: TrackingInfo, run_id: str, plugin: Trainable, ref: str, part: str, trial_id: str,
                    config: dict[str, Any], artifact_dir: Path) -> str | None:
    """Log the finished trial's model as a LoggedModel of its run (READY, final metrics linked); its model id, or
    None for a trainable that declares no model. Safe to repeat (`faults.patient`, a retried trial): the run's
    model is found again and rewritten, never a second one."""
    if plugin.model is None:
        return None
    client = MlflowClient(info.uri)
    model = _run_model(client, info.experiment_id, run_id)
    if model is None:
        model = client.create_logged_model(
            info.experiment_id, name=model_name(part, trial_id), source_run_id=run_id, model_type=plugin.name,
            params={k: str(v)[:6000] for k, v in config.items()},
            tags={PART_TAG: part, TRIAL_TAG: trial_id, TRAINABLE_TAG: plugin.name})
    import mlflow.pyfunc  # here, not at import: a study's driver that logs no model never loads it
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="trial-model-") as tmp:
        data = pyfunc.write_data(Path(tmp) / MODEL_DATA, artifact_dir, plugin, ref, part, trial_id, config)
        saved = Path(tmp) / "model"
        mlflow.pyfunc.save_model(
            str(saved), loader_module=PYFUNC_LOADER, data_path=str(data), pip_requirements=requirements(),
            mlflow_model=Model(artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id,
                               model_id=model.model_id))
        folder = model_folder(info, model)
        if folder is None:
            client.log_model_artifacts(model.model_id, str(saved))
        else:
            shutil.copytree(saved, folder, dirs_exist_ok=True)
    client.finalize_logged_model(model.model_id, "READY")
    step = _link_metrics(client, run_id, model.model_id)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=step)])
    return model.model_id


def model_folder(info: TrackingInfo, model: LoggedModel) -> Path | None:
    """Where the model's files are in the study folder where it lies now; None when MLflow keeps them (a server's
    store, an artefact root outside the folder)."""
    if not info.artifacts:
        return None
    root, location = local_path(info.artifact_location), local_path(model.artifact_location)
    if root is None or location is None:
        return None
    try:
        return Path(info.artifacts) / location.relative_to(root)
    except ValueError:
        return None


def _run_model(client: MlflowClient, experiment_id: str, run_id: str) -> LoggedModel | None:
    found = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'", max_results=1)
    return found[0] if found else None


def _link_metrics(client: MlflowClient, run_id: str, model_id: str) -> int:
    """Link the run's final value of every metric to the model (as `mlflow.pyfunc.log_model` links the metrics
    of its step): the same points again, with the model's id, so the run's history gains no duplicate. Returns
    the last step."""
    linked = []
    for key in client.get_run(run_id).data.metrics:
        last = max(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        linked.append(Metric(key, last.value, last.timestamp, last.step, model_id=model_id))
    for start in range(0, len(linked), 1000):  # MLflow's limit per batch
        client.log_batch(run_id, metrics=linked[start:start + 1000])
    return max((m.step for m in linked), default=0)


def register_chosen(info: TrackingInfo, study: str, part: str, trial_id: str) -> dict[str, Any] | None:
    """Register the part's chosen trial's logged model as a new version of `<study>-<part>` and point the alias
    `chosen` at it; what was registered (name, version, model id, run id), or None when the trial has no logged
    model (its trainable declares none, or the scheduler stopped it)."""
    client = MlflowClient(info.uri)
    runs = client.search_runs(
        [info.experiment_id], max_results=1,
        filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{PARENT_TAG}` = '{info.parent_run_id}'")
    model = _run_model(client, info.experiment_id, runs[0].info.run_id) if runs else None
    if model is None or model.status != LoggedModelStatus.READY:
        return None
    name = registered_model(study, part)
    if not client.search_registered_models(filter_string=f"name = '{name}'", max_results=1):
        client.create_registered_model(name, description=f"the chosen model of part {part!r} of study {study!r}, "
                                                         f"one version per study run (alias {CHOSEN!r}: the latest)")
    folder = model_folder(info, model)
    version = client.create_model_version(
        name, source=folder.as_uri() if folder is not None else model.artifact_location, run_id=model.source_run_id,
        model_id=model.model_id, tags={TRIAL_TAG: trial_id, PART_TAG: part, MODEL_ID_TAG: model.model_id})
    client.set_registered_model_alias(name, CHOSEN, version.version)
    return {"name": name, "version": int(version.version), "model_id": model.model_id,
            "run_id": model.source_run_id}
