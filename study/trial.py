"""The Ray Tune function trainable: a trainable from `trainables/` plus checkpoints, MLflow and resources.

Per epoch the trainable writes its state into a folder and calls `report`; here that folder goes to
`tune.report(..., checkpoint=...)` and the metrics to the trial's MLflow run (step = epoch). A restored or
retried trial gets its last checkpoint back through `tune.get_checkpoint()` and logs into the same run.
"""
from __future__ import annotations

import logging
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import ray
from mlflow.tracking import MlflowClient
from ray import tune

from study import faults, logged_model, tracking
from study.stop import stop_fit_like_ctrl_c
from study.tracking import TrackingInfo
from trainables.names import (DATA_HASH_TAG, EPOCH, ERROR_TAG, GROUP_TAG, NODE_TAG, PART_TAG, RUN_RESULTS,
                              STOPPED_TAG, STUDY_KEYS, TRACEBACK_TAG, TRAINABLE_TAG, TRIAL_TAG, embedded_uri)
from trainables.reports import EpochMarks, ReportError, reader_for
from trainables.trainable import BUDGET, Trainable


class TrainExited(RuntimeError):
    """`train` called sys.exit(): the trial's own error (a SystemExit would end the Ray worker, not the trial)."""


class TrainInterrupted(RuntimeError):
    """`train` raised KeyboardInterrupt: the trial fails, and the driver stops the study as a Ctrl-C does
    (`StopOnInterrupt`)."""


def quiet_exit_in_callbacks() -> None:
    """Keep the worker's expected exit out of the study's output; every other unraisable error still prints.

    Ray ends a trial's worker with SIGTERM, and its handler raises SystemExit wherever Python is. When that is
    inside a garbage-collector callback, Python cannot raise it and prints "Exception ignored in ... Traceback
    ... SystemExit" instead, which reaches the study's console as the trial's output (seen in a smoke study).
    Idempotent: a reused worker runs this once per trial."""
    current = sys.unraisablehook
    if getattr(current, "_study_quiet_exit", False):
        return

    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
            return
        current(unraisable)

    hook._study_quiet_exit = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def run_trial(config: dict[str, Any], *, plugin: Trainable, part: str, dataset: Any, tracking_info: TrackingInfo,
              data_hash: str, threads: int, trainable_ref: str = "") -> None:
    """Run one trial of the part's trainable on the preloaded `dataset` (shared through the object store, not
    re-read). `threads`: the trial's CPUs, given to a config that has a `num_threads` setting and leaves it 0.
    `trainable_ref`: the trainable as the study file names it (the logged model's loader finds it by that)."""
    # Ray logs a line per persisted checkpoint (one per epoch); the progress table is enough.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    quiet_exit_in_callbacks()
    ctx = tune.get_context()
    trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
    group = str(config.get(GROUP_TAG, "search"))
    train_config = {k: v for k, v in config.items() if k not in STUDY_KEYS}
    if "num_threads" in plugin.keys():
        train_config.setdefault("num_threads", threads)
    try:
        cfg = plugin.make_config(train_config)
    except (ValueError, TypeError) as err:  # a bad key: still log the run, then fail it
        cfg, params = None, train_config
        config_error: Exception | None = err
    else:
        params, config_error = plugin.full_config(train_config), None
    # A retried start of a trial that failed with its own error fails again at once (study.faults): Tune's
    # max_failures is for dead workers and nodes. Every MLflow call waits out a tracking server that blinks.
    faults.patient(faults.raise_earlier_error, tracking_info, trial_id)
    run_id = faults.patient(
        tracking.trial_run, tracking_info, trial_id, trial_name,
        tags={TRAINABLE_TAG: plugin.name, PART_TAG: part, GROUP_TAG: group, DATA_HASH_TAG: data_hash,
              NODE_TAG: ray.get_runtime_context().get_node_id()},
        params=params,
    )
    uri = tracking_info.uri
    # Epochs the run has already (a retry from an older checkpoint than its last logged epoch): not logged twice.
    logged = faults.patient(faults.last_logged_epoch, uri, run_id)
    with tempfile.TemporaryDirectory(prefix="trial-") as work:
        work_dir = Path(work)
        checkpoint_dir, artifact_dir = work_dir / "checkpoint", work_dir / "artifacts"
        resume_from = None
        restored = tune.get_checkpoint()
        if restored is not None:
            resume_from = Path(restored.to_directory(str(work_dir / "restored")))

        # Every report is read once (trainables.reports) and only that reading goes on: MLflow, Tune, ASHA, the
        # searcher, the progress line and the summary all see the same plain numbers, or the trial fails.
        reader = reader_for(plugin.metric, getattr(cfg, BUDGET, 0), resume_from)
        marks = EpochMarks()
        tune_stopped: list[bool] = []  # Tune ends a trial's thread with sys.exit(0) inside tune.report (ASHA)

        def report(metrics: dict[str, Any]) -> None:
            clean = reader.read(metrics)
            epoch = int(clean[EPOCH])
            if epoch > logged:
                faults.patient(tracking.log_epoch, uri, run_id, clean, step=epoch)
            # A plugin that writes no state still reports: Tune then keeps no checkpoint (a retry starts over).
            has_state = marks.mark(checkpoint_dir, epoch)
            try:
                tune.report(clean,
                            checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)) if has_state else None)
            except SystemExit:
                tune_stopped.append(True)
                raise

        try:
            if config_error is not None:
                raise config_error
            try:
                plugin.train(cfg, report, checkpoint_dir=checkpoint_dir, resume_from=resume_from,
                             artifact_dir=artifact_dir, data=dataset)
            except SystemExit as err:
                if tune_stopped:  # Tune's own stop of the trial, not the plugin's exit
                    raise
                raise TrainExited(f"train called sys.exit({err.code!r}); raise an exception to fail a trial") from None
            except KeyboardInterrupt:
                raise TrainInterrupted("train raised KeyboardInterrupt: the study stops as on a Ctrl-C") from None
            reader.finish()  # an error `train` swallowed, or no report at all
            logged_model.check_files(plugin, artifact_dir)  # the files its Trainable.model names were written
        except faults.TrackingUnavailable:
            raise  # not the trial's error, and there is no server to record it in
        except Exception as err:
            # train swallowed its report's error and then failed of it: the report's error is the cause to name
            swallowed = reader.error is not None and not isinstance(err, (ReportError, TrainInterrupted, TrainExited))
            error = reader.error if swallowed else err
            faults.patient(tracking.end_trial, uri, run_id, "FAILED", tags={
                ERROR_TAG: f"{type(error).__name__}: {error}",
                TRACEBACK_TAG: traceback.format_exc()[-4000:],
            })
            if swallowed:
                raise error from err
            raise
        faults.patient(tracking.log_artifacts, tracking_info, run_id, artifact_dir, RUN_RESULTS)
        # A trainable with a Trainable.model: the run's LoggedModel (study.logged_model); a stopped trial has none
        faults.patient(logged_model.log_trial_model, tracking_info, run_id, plugin, trainable_ref or plugin.name,
                       part, trial_id, params, artifact_dir)
        faults.patient(tracking.end_trial, uri, run_id, "FINISHED")


class CloseStoppedRuns(tune.Callback):
    """Driver side: a trial that ASHA stopped never reaches the end of `run_trial`; close its run here.

    It is pickled with the experiment and comes back on restore, so it holds only plain values. `uri` None: the
    study folder's own store, found from the trial's experiment folder (<study folder>/<part>), so a restored copy
    of the folder closes its own runs, not the original's.
    """

    def __init__(self, uri: str | None, experiment_id: str, epochs: int):
        self.uri, self.experiment_id, self.epochs = uri, experiment_id, int(epochs)

    def _close(self, trial: Any, status: str, tags: dict[str, str]) -> None:
        try:
            self._close_run(trial, status, tags)
        except faults.caught() as err:  # a tracking server that is gone stops the study (study.faults); resume closes it
            if not faults.is_outage(err):
                raise
            faults.mark_outage(self.uri or "")

    def _close_run(self, trial: Any, status: str, tags: dict[str, str]) -> None:
        uri = self.uri or embedded_uri(Path(trial.remote_experiment_path).parent)
        client = MlflowClient(uri)
        runs = client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TRIAL_TAG}` = '{trial.trial_id}'", max_results=1,
        )
        if runs and runs[0].info.status == "RUNNING":
            tracking.end_trial(uri, runs[0].info.run_id, status, tags=tags)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = (trial.last_result or {}).get("training_iteration", 0)
        if done < self.epochs:
            self._close(trial, "FINISHED", {STOPPED_TAG: f"scheduler stopped it after {done} of {self.epochs} epochs"})
        else:  # a run the trial could not close itself (stopped at its last report): no end-of-run artefacts
            self._close(trial, "FINISHED", {STOPPED_TAG: "stopped at its last epoch, before writing artefacts"})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # The worker marks FAILED itself; this covers a worker that died without getting the chance.
        self._close(trial, "FAILED", {ERROR_TAG: "trial process failed (see the Ray trial error file)"})


class StopOnInterrupt(tune.Callback):
    """Driver side: a trial whose `train` raised KeyboardInterrupt (`TrainInterrupted`) stops the study as a
    Ctrl-C does; the other trials stay resumable with `study resume`. Holds no state (pickled with the
    experiment)."""

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # the error file Tune just wrote, as text (never the pickled exception: nothing is unpickled)
        path = Path(trial.error_file) if trial.error_file else None
        if path is not None and path.is_file() and TrainInterrupted.__name__ in path.read_text(errors="replace"):
            stop_fit_like_ctrl_c()
