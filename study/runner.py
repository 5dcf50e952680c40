"""Run and resume a study: one Ray Tune experiment per part under one study folder.

Order matters: data and the checks that need it, then the study folder's lock, then Ray, and only then the
MLflow parent run, so that a mistake found on the way leaves no half-made study. See `study.spec` for what
the folder holds and `study.tune_part` for one part's experiment.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

from data.errors import DataError
from study import faults, studyfile, tracking
from study.baselines import log_baselines
from study.local_ray import check_resources, cluster_ray, local_ray
from study.lock import study_lock
from study.preflight import check_part_data, plugin_hooks, study_source
from study.space import open_storage, storage_url
from study.spec import StudySpec, load_spec, load_summaries, save_spec
from study.studyfile import Part, StudyFile
from study.tune_part import load_dataset, print_summary, run_part
from trainables import plugin_folder
from trainables.names import (ARTIFACTS, KIND_TAG, PRESET_TAG, SPACE_TAG, STORAGE_TAG, STUDY_FILE, STUDY_STATE,
                                 SUMMARY_FILE)


@contextmanager
def study_ray(spec: StudySpec, parts: list[Part] | None = None) -> Iterator[dict[str, float]]:
    """The study's Ray for the `with` block: a private local one, or the cluster `--address` names (joined only
    then). Shut down (or left) on every way out of the block, an exception or a SIGTERM (ray.init makes that a
    SystemExit in the driver) included. Every worker, on this machine as on a cluster, runs in `worker_dir`."""
    with worker_dir(spec, parts or []) as runtime_env:
        # MLflow's HTTP retries bounded in the driver and every worker: a server that is gone is found (study.faults)
        runtime_env = faults.with_tracking_env(runtime_env, spec.mlflow_uri)
        with (cluster_ray(spec.address, runtime_env=runtime_env) if spec.address
              else local_ray(runtime_env=runtime_env)) as resources:
            yield resources


@contextmanager
def worker_dir(spec: StudySpec, parts: list[Part]) -> Iterator[dict[str, Any]]:
    """Ray's runtime environment for the study's workers: the folder they run in, as `working_dir`.

    A trainable from a module beside the study file: that folder, whole (its module may import the files beside
    it), less what `trainables.plugin_folder` leaves out and the study's own folder when it lies inside
    (checked for clashing names and size as the study file was read). Else an empty folder. Either way Ray then
    puts neither the driver's working directory nor its script's folder on the workers' sys.path, as it does
    without a `working_dir`: a `trainables/` or `data/` folder where `study run` was started would shadow the
    framework's packages in every trial."""
    folders = sorted({p.ship.parent for p in parts if p.ship is not None})
    if len(folders) > 1:  # one study file, one folder: parts read from elsewhere would be a bug of ours
        raise RuntimeError(f"study.runner: a study's trainables come from several folders: {folders}")
    if folders:
        yield {"working_dir": str(folders[0]),
               "excludes": plugin_folder.excludes(folders[0], also=[Path(spec.study_dir)])}
        return
    with tempfile.TemporaryDirectory(prefix="study-worker-") as empty:
        yield {"working_dir": empty}


def run_study(spec: StudySpec, study: StudyFile | None = None) -> int:
    """Run every part not yet done; 0 when all finished, 1 when some trials errored, 130 when interrupted
    (resume continues it).

    Order: data and the checks that need it, then the study folder's lock, then Ray (and the check of its
    resources), and only then the MLflow parent run: a mistake found on the way leaves no half-made study.
    `study`: the study file of a new study (written into its folder); a resumed one reads the folder's copy.
    Each part's summary is also written to STUDY_DIR/summary.json for scripts.
    """
    study_dir = Path(spec.study_dir)
    parts = spec.parts(study)
    # Data first: a missing or bad file, or data on which every trial would fail, is one line here, in a
    # second, before a folder, a run or Ray exists.
    loaded = {}
    for part in parts:
        if part.name not in spec.done:
            with plugin_hooks(part, study_source(spec), "load_data", "data_hash"):
                loaded[part.name] = load_dataset(part)
    warnings = [w for part in parts if part.name in loaded for w in check_part_data(part, loaded[part.name][0], spec)]
    # Ray's new console output ignores a progress reporter; the classic one prints our compact table.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # One forced state snapshot per checkpoint is what makes every finished epoch survive a kill.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    with study_lock(study_dir):
        if spec.parent_run_id is None and (study_dir / STUDY_STATE).exists():
            raise DataError(f"already holds a study; continue it with `study resume {study_dir}` or pick --name",
                            study_dir)
        if spec.parent_run_id is not None:  # resume: the parts another driver finished before we held the lock
            spec.done = load_spec(study_dir).done
        print(f"study: {spec.name} in {study_dir}", flush=True)
        for line in warnings:
            print(f"study: warning: {line}", flush=True)
        todo = [part for part in parts if part.name not in spec.done]
        try:
            # No Ray for a study with no part left to run (a resume of a finished one only ends its MLflow run)
            with study_ray(spec, parts) if todo else nullcontext({}) as resources:
                if todo:
                    check_resources(resources, spec.cpus_per_trial, spec.gpus_per_trial,
                                    f"the Ray cluster at {spec.address}" if spec.address else "this machine")
                try:
                    return _drive(spec, study, parts, loaded, resources)
                except faults.caught() as err:  # the driver's own MLflow call found the tracking server gone
                    if not (faults.remote(spec.mlflow_uri) and faults.is_outage(err)):
                        raise
                    print(faults.outage_line(spec.mlflow_uri, study_dir, resumable=spec.parent_run_id is not None),
                          flush=True)
                    return faults.TEMPFAIL_EXIT
        except KeyboardInterrupt:  # outside Tune's fit (which stops on a Ctrl-C and returns): Ray's start, most often
            print(f"study: continue with: study resume {study_dir}" if (study_dir / STUDY_STATE).exists() else
                  "study: stopped before the study began (nothing of it was kept); run the same command again",
                  flush=True)
            raise


def _drive(spec: StudySpec, study: StudyFile | None, parts: list[Part], loaded: dict[str, Any],
           resources: dict[str, float]) -> int:
    """The study itself, with the folder locked and Ray up."""
    study_dir = Path(spec.study_dir)
    if spec.parent_run_id is None:
        text = studyfile.dumps(study)
        (study_dir / STUDY_FILE).write_text(text)
        # The search space goes with the study, so analysis rebuilds the Optuna study without guessing it.
        spaces = {SPACE_TAG + p.name: json.dumps({"space": studyfile.space_json(p), "metric": p.metric,
                                                  "mode": p.mode, "trainable": p.plugin.name}) for p in parts}
        # The runs' files go into the folder for every store but a server (MLflow's default: ./mlruns of the cwd)
        local = tracking.keeps_artifacts(spec.mlflow_uri)
        info = tracking.start_study(spec.mlflow_uri, spec.name, {
            KIND_TAG: spec.target, PRESET_TAG: spec.preset or "", STORAGE_TAG: str(study_dir.resolve()),
            **spaces}, artifact_location=(study_dir / ARTIFACTS).resolve().as_uri() if local else None,
            params=tracking.study_params(dataclasses.asdict(spec), parts),
            files={"search_space.json": tracking.search_spaces(parts), STUDY_FILE: text})
        spec.experiment_id, spec.parent_run_id, spec.git_commit = info.experiment_id, info.parent_run_id, info.git_commit
        open_storage(storage_url(study_dir))  # its Optuna storage first: a folder with study.json has optuna.db
        save_spec(spec)
    # Where the runs' files go: this folder's artifacts/, also when it was copied or moved since the study began
    info = tracking.with_artifacts(tracking.TrackingInfo(spec.mlflow_uri, spec.experiment_id, spec.parent_run_id,
                                                         spec.git_commit or "unknown"), study_dir)
    summaries = _earlier_summaries(study_dir, spec.done)
    for part in parts:
        if part.name in spec.done:
            print(f"study: {part.name} already finished, kept as it is", flush=True)
            continue
        summary, configs = run_part(spec, part, info, loaded[part.name], resources)
        if faults.outage() is not None:  # the tracking server stopped answering: the part goes on at resume
            summary["complete"] = False
        if part.plugin.baselines is not None and summary["complete"]:
            summary["baselines"] = _baselines(info, part, configs, loaded[part.name][0])
        summaries.append(summary)
        (study_dir / SUMMARY_FILE).write_text(json.dumps(summaries, indent=2, default=str))
        print_summary(summary)
        if not summary["complete"]:
            if faults.outage() is not None:
                print(faults.outage_line(spec.mlflow_uri, study_dir), flush=True)
                return faults.TEMPFAIL_EXIT
            print(f"study: interrupted with {summary['trials']} of {summary['planned']} {part.name} trials; "
                  f"continue with: study resume {study_dir}", flush=True)
            return 130
        spec.done.append(part.name)
        save_spec(spec)
    errored = sum(s["errored"] for s in summaries)
    trials = sum(s["trials"] for s in summaries)
    tracking.finish_study(info, "FINISHED", {f"{s['part']}_{k}": v for s in summaries for k, v in s.items()
                                             if k != "best"} | {"summaries": summaries})
    mlflow_line = f"MLflow: mlflow ui --backend-store-uri {spec.mlflow_uri} --workers 1"
    if errored:
        counts = ", ".join(f"{s['part']} {s['errored']}/{s['trials']}" for s in summaries if s["errored"])
        print(f"study: finished with {errored} of {trials} trials errored ({counts}); each error is the "
              f"'error' tag of its MLflow run. {mlflow_line}", flush=True)
    else:
        print(f"study: done. {mlflow_line}", flush=True)
    print(f"study: report: study report --storage {study_dir.parent} --name {study_dir.name}", flush=True)
    return 1 if errored else 0


def _earlier_summaries(study_dir: Path, done: list[str]) -> list[dict[str, Any]]:
    """The summaries of the parts an earlier driver finished (from summary.json): the last lines, the exit status
    and summary.json of a resumed study count every part, an errored trial of a part finished before included."""
    if not done or not (study_dir / SUMMARY_FILE).exists():
        return []
    found = load_summaries(study_dir)
    return [found[name] for name in done if name in found]


def _baselines(info: Any, part: Part, configs: list[dict[str, Any]], data: Any) -> dict[str, int]:
    """Fit the part's baselines on every data setting its trials used (see study.baselines)."""
    started = time.time()
    settings, runs = log_baselines(info, part, configs, data)
    if runs:
        print(f"study: baselines: {runs} runs for {settings} data setting(s) in {time.time() - started:.1f} s",
              flush=True)
    return {"settings": settings, "runs": runs}


