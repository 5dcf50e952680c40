"""One part of a study as one Ray Tune experiment: its trainable, searcher, scheduler, and what it found.

Fit (or restore and finish) the part's Tune experiment in STUDY_DIR/<part>; the summary says how many
trials ran, which was best on the part's objective (validation), and what the study cost beyond training.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from study import faults, logged_model
from study.console import FailedTrialLines, quiet_tune
from study.searcher import STORAGE_ENV
from study.space import build_scheduler, build_searcher, storage_url
from study.progress import PartProgress
from study.spec import StudySpec
from study.studyfile import Part, trial_config
from study.tracking import default_uri
from study.trial import CloseStoppedRuns, StopOnInterrupt, run_trial
from trainables.names import CHOSEN, GROUP_TAG


def load_dataset(part: Part) -> tuple[Any, str]:
    """Read the part's data once in the driver (its trainable's `load_data` on the part's constants) and its
    content hash; trials get it through the object store (tune.with_parameters)."""
    return part.plugin.data_for(trial_config(part, {}))


def auto_concurrency(spec: StudySpec, res: dict[str, float] | None = None) -> int:
    """As many trials as the cluster's CPUs (and GPUs) hold at once.

    Tune would otherwise keep one trial pending behind a searcher, so trials would start one by one; with
    max_concurrent_trials set it wraps the searcher in a ConcurrencyLimiter and keeps that many pending.
    """
    if res is None:
        res = ray.cluster_resources()
    n = int(res.get("CPU", 1) // spec.cpus_per_trial)
    if spec.gpus_per_trial > 0:
        n = min(n, int(res.get("GPU", 0) // spec.gpus_per_trial))
    return max(1, n)


def run_part(spec: StudySpec, part: Part, tracking_info: Any, loaded: tuple[Any, str],
             resources: dict[str, float] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fit (or restore and finish) one part on its loaded data; returns its summary and the configs of the
    trials that did not error (what the part's baselines are fitted on)."""
    dataset, data_hash = loaded
    threads = max(1, int(spec.cpus_per_trial))
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, plugin=part.plugin, part=part.name, dataset=dataset,
                             tracking_info=tracking_info, data_hash=data_hash, threads=threads,
                             trainable_ref=part.trainable),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial},
    )
    path = Path(spec.study_dir) / part.name
    slots = spec.max_concurrent or auto_concurrency(spec, resources)
    started = time.time()
    resumed = tune.Tuner.can_restore(str(path))
    if resumed:
        print(f"study: resuming {part.name} from {path}", flush=True)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=dict(part.constants),
            tune_config=tune.TuneConfig(
                metric=part.metric, mode=part.mode,
                search_alg=build_searcher(part, seed=spec.seed, storage=storage_url(spec.study_dir)),
                scheduler=build_scheduler(part, part.scheduler),
                num_samples=part.total_trials,
                max_concurrent_trials=slots,
                reuse_actors=True,
                trial_dirname_creator=trial_folder,
            ),
            run_config=tune.RunConfig(
                name=part.name,
                storage_path=str(Path(spec.study_dir).resolve()),
                verbose=1,
                progress_reporter=(progress_table(part) if spec.verbose else PartProgress(
                    part.name, part.total_trials, part.epochs, slots, part.metric, part.mode)),
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                # Ray keeps the latest checkpoint as well as the best `num_to_keep`: best and last.
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=1, checkpoint_score_attribute=part.metric, checkpoint_score_order=part.mode),
                # None: the folder's own store, found from the trial's folder (a copied folder closes its own runs)
                callbacks=[CloseStoppedRuns(None if tracking_info.uri == default_uri(spec.study_dir) else
                                            tracking_info.uri, tracking_info.experiment_id, part.epochs),
                           StopOnInterrupt(),  # a train that raised KeyboardInterrupt stops the study
                           FailedTrialLines(part.name),  # one line per failed trial, not Ray's traceback
                           # a tracking server that stops answering stops the fit, resumable (study.faults)
                           *faults.watch_callbacks(tracking_info.uri, tracking_info.experiment_id)],
            ),
        )
    handler = signal.getsignal(signal.SIGINT)
    # The searcher restored from a copied or moved folder opens this folder's Optuna storage (study.searcher)
    before = os.environ.get(STORAGE_ENV)
    os.environ[STORAGE_ENV] = storage_url(spec.study_dir)
    try:
        with quiet_tune():  # Ray's lines that say nothing to a study's user (study.console)
            grid = tuner.fit()
    finally:
        if before is None:
            os.environ.pop(STORAGE_ENV, None)
        else:
            os.environ[STORAGE_ENV] = before
    interrupted = _fit_was_interrupted(handler)
    summary = summarize(part, grid, time.time() - started, resumed, slots)
    # Trials running at a Ctrl-C come back TERMINATED like finished ones: the signal tells them apart.
    summary["complete"] = summary["complete"] and not interrupted
    if summary["complete"] and faults.remote(tracking_info.uri):  # runs whose close was lost with the server
        faults.close_leftover_runs(tracking_info, part.name, list(grid), part.epochs)
    summary["fit_started_at"] = started  # unix time: with the runs' start times it splits worker start-up off
    if summary["complete"] and summary.get("best") and part.plugin.model is not None:
        # the chosen trial's logged model: a new version of <study>-<part>, alias `chosen` (study.logged_model)
        summary["registered"] = logged_model.register_chosen(tracking_info, spec.name, part.name,
                                                             summary["best"]["trial_id"])
    return summary, [dict(r.config) for r in grid if r.error is None and r.config]


def trial_folder(trial: Any) -> str:
    """`<trial id>-<group>`: Ray's default names a trial's folder after every config value, the data path included."""
    return f"{trial.trial_id}-{trial.config.get(GROUP_TAG, 'search')}"


def _fit_was_interrupted(before: Any) -> bool:
    """Whether a Ctrl-C (or SIGUSR1) stopped the fit that just returned.

    Tune swaps in its own SIGINT handler for a fit and puts the previous one back only when that signal stops
    the experiment; it returns normally either way. So the handler found afterwards says which it was; it is
    then reset, so the next part's fit starts from the same state."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") != "0":  # Tune installed none: nothing to tell by
        return False
    interrupted = signal.getsignal(signal.SIGINT) is before
    signal.signal(signal.SIGINT, before)
    return interrupted


def progress_table(part: Part) -> Any:
    """Ray's table (`--verbose`): searched parameters and a few metrics of every trial, every 15 s."""
    return tune.CLIReporter(
        metric_columns=part.plugin.progress_columns(),
        parameter_columns=[*part.space, GROUP_TAG],
        max_report_frequency=15, sort_by_metric=False, max_progress_rows=40,
    )


def summarize(part: Part, grid: Any, wall_s: float, resumed: bool = False, slots: int = 1) -> dict[str, Any]:
    """Best trial, counts and the study overhead per trial: (wall x concurrent slots - training time) / trials.

    With `slots` trials at once the wall clock is shared, hence the product. After a resume, trials carry
    training time from before the interruption, so no overhead is given.
    """
    results = list(grid)
    finished = [r for r in results if r.error is None and r.metrics]
    errors = [r for r in results if r.error is not None]
    train_s = sum(float(r.metrics.get("time_total_s", 0.0)) for r in finished)
    summary: dict[str, Any] = {
        "part": part.name, "trainable": part.plugin.name, "trials": len(results), "planned": part.total_trials,
        "errored": len(errors), "wall_s": round(wall_s, 2), "trial_train_s": round(train_s, 2),
        "concurrent": slots,
        "overhead_per_trial_s": None if resumed else round((wall_s * slots - train_s) / max(1, len(results)), 3),
        "complete": len(results) >= part.total_trials and grid.num_terminated + grid.num_errors >= part.total_trials,
    }
    scored = [r for r in finished if part.metric in r.metrics]
    if scored:
        pick = max if part.mode == "max" else min
        best = pick(scored, key=lambda r: r.metrics[part.metric])
        summary["best"] = {
            "metric": part.metric, "value": best.metrics[part.metric],
            "config": {k: v for k, v in best.config.items() if k not in ("data_dir",)},
            "trial_id": best.metrics.get("trial_id"), "epochs": best.metrics.get("training_iteration"),
            # the chosen trial's test numbers: reported beside the choice, never used for it
            "test": {k: v for k, v in best.metrics.items() if k.startswith(part.plugin.test_metrics)
                     and not k.endswith("_std") and isinstance(v, (int, float)) and k not in best.config},
        }
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n== {summary['part']}: {summary['trials']} trials ({summary['errored']} errored, "
          f"{summary['concurrent']} at a time), "
          f"wall {summary['wall_s']:.1f} s, training {summary['trial_train_s']:.1f} s, "
          + ("resumed" if summary["overhead_per_trial_s"] is None
             else f"overhead {summary['overhead_per_trial_s']:.2f} s/trial"), flush=True)
    best = summary.get("best")
    if best:
        cfg = ", ".join(f"{k}={v}" for k, v in sorted(best["config"].items()))
        print(f"   best {best['metric']} = {best['value']:.4f} after {best['epochs']} epochs: {cfg}", flush=True)
        if best.get("test"):
            print("   its test numbers (reported, not used to choose): "
                  + ", ".join(f"{k} = {v:.4f}" for k, v in best["test"].items()), flush=True)
    if "registered" in summary:
        found = summary["registered"]
        print(f"   its model: models:/{found['name']}@{CHOSEN} (version {found['version']})" if found else
              "   its model: none registered (the chosen trial logged no model: the scheduler stopped it)", flush=True)
