"""Run and resume a study: one Ray Tune experiment per part (covid, vae) under one study folder.

A study folder holds `study.json` (what was asked, the MLflow parent run, which parts are done), the MLflow
store (`mlflow.db`, unless --mlflow-uri names another) and one Tune experiment folder per part. Everything
needed to continue after a kill is in that folder, so `study resume DIR` takes nothing else.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from study.presets import Part, parts_for

from trainables.registry import ARTIFACTS, STUDY_STATE as STUDY_FILE, SUMMARY_FILE


@dataclass
class StudySpec:
    """Everything `study run` was asked, plus the state that resume needs; saved as study.json."""

    target: str
    preset: str
    name: str
    study_dir: str
    mlflow_uri: str
    seed: int = 0
    num_samples: int | None = None        # search trials per part (None: the preset's)
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    scheduler: str | None = None          # None: the preset's
    max_failures: int = 0
    address: str | None = None
    data_dir: str | None = None
    epochs: int | None = None             # override the preset's epochs (quick checks)
    extra_fixed: list[dict] = field(default_factory=list)  # --fixed: runs added to the preset's fixed ones
    settings: dict[str, Any] = field(default_factory=dict)  # --set KEY=VALUE: constants over the preset's
    experiment_id: str | None = None
    parent_run_id: str | None = None
    git_commit: str | None = None
    done: list[str] = field(default_factory=list)

    def parts(self) -> list[Part]:
        parts = []
        for part in parts_for(self.target, self.preset):
            changes: dict[str, Any] = {}
            if self.num_samples is not None:
                changes["num_samples"] = self.num_samples
            if self.scheduler is not None:
                changes["scheduler"] = self.scheduler
            constants = dict(part.constants, **settings_for(part, self.settings))
            constants["seed"] = constants.get("seed", 0) + self.seed
            if self.epochs is not None:
                constants["epochs"] = self.epochs
            if self.data_dir:
                constants["data_dir"] = self.data_dir
            if self.extra_fixed:
                changes["fixed"] = [*part.fixed, *self.extra_fixed]
            parts.append(dataclasses.replace(part, constants=constants, **changes))
        return parts


def settings_for(part: Part, settings: dict[str, Any]) -> dict[str, Any]:
    """The --set values that are keys of this part's trainable config (a homework study has two trainables)."""
    from trainables.common import config_keys
    from trainables.registry import get

    names = set(config_keys(get(part.kind).config_cls))
    return {k: v for k, v in settings.items() if k in names}


def check_settings(target: str, preset: str, settings: dict[str, Any]) -> None:
    """Each --set key must be a config key of one of the study's trainables, and one the preset does not vary
    per trial (a searched key or one a fixed run sets would silently not apply to those trials)."""
    parts = parts_for(target, preset)
    for key in settings:
        owners = [p for p in parts if key in settings_for(p, {key: None})]
        if not owners:
            raise ValueError(f"--set {key}: not a setting of the {target} trainable")
        for p in owners:
            if key in p.space:
                raise ValueError(f"--set {key}: the {preset} preset searches {key} for {p.kind}; "
                                 "a constant would not apply to search trials")
            if any(key in run for run in p.fixed):
                raise ValueError(f"--set {key}: the {preset} preset's fixed {p.kind} runs set {key} per run")


def save_spec(spec: StudySpec) -> None:
    """Atomic write: a kill while saving must not lose the study's state."""
    path = Path(spec.study_dir) / STUDY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(spec), indent=2))
    tmp.replace(path)


def load_spec(study_dir: str | Path) -> StudySpec:
    from data.errors import DataError

    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        raise DataError(f"no {STUDY_FILE}: not a study folder (made by `study run`)", path.parent)
    try:
        return StudySpec(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise DataError(f"unreadable study state ({err})", path) from None


def load_dataset(part: Part) -> tuple[Any, str]:
    """Read the part's data once in the driver; trials get it through the object store (tune.with_parameters)."""
    if part.kind == "covid":
        from data.sequence_data import load_source

        source = load_source(part.constants.get("data_dir"), part.constants.get("date_range", "full"))
        return source, source.data_hash
    from data.faces import load_faces
    from data.location import faces_source, resolve_data_dir

    faces = load_faces(faces_source(resolve_data_dir(part.constants.get("data_dir"))),
                       size=int(part.constants.get("image_size", 32)), progress=True,
                       max_images=part.constants.get("max_images"))
    return faces, faces.source_hash


@contextmanager
def study_ray(spec: StudySpec) -> Iterator[dict[str, float]]:
    """The study's Ray for the `with` block: a private local one, or the cluster `--address` names (joined only
    then). Shut down (or left) on every way out of the block, an exception or a SIGTERM (ray.init makes that a
    SystemExit in the driver) included."""
    from study.local_ray import cluster_ray, local_ray

    with (cluster_ray(spec.address) if spec.address else local_ray()) as resources:
        yield resources


def auto_concurrency(spec: StudySpec, res: dict[str, float] | None = None) -> int:
    """As many trials as the cluster's CPUs (and GPUs) hold at once.

    Tune would otherwise keep one trial pending behind a searcher, so trials would start one by one; with
    max_concurrent_trials set it wraps the searcher in a ConcurrencyLimiter and keeps that many pending.
    """
    if res is None:
        import ray

        res = ray.cluster_resources()
    n = int(res.get("CPU", 1) // spec.cpus_per_trial)
    if spec.gpus_per_trial > 0:
        n = min(n, int(res.get("GPU", 0) // spec.gpus_per_trial))
    return max(1, n)


def run_part(spec: StudySpec, part: Part, tracking_info: Any, loaded: tuple[Any, str],
             resources: dict[str, float] | None = None) -> dict[str, Any]:
    """Fit (or restore and finish) one part on its loaded data; returns its summary."""
    from ray import tune

    from study.space import build_scheduler, build_searcher, storage_url
    from study.trial import CloseStoppedRuns, run_trial

    dataset, data_hash = loaded
    threads = max(1, int(spec.cpus_per_trial))
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, kind=part.kind, dataset=dataset, tracking_info=tracking_info,
                             data_hash=data_hash, threads=threads),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial},
    )
    path = Path(spec.study_dir) / part.kind
    slots = spec.max_concurrent or auto_concurrency(spec, resources)
    started = time.time()
    resumed = tune.Tuner.can_restore(str(path))
    if resumed:
        print(f"study: resuming {part.kind} from {path}", flush=True)
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
            ),
            run_config=tune.RunConfig(
                name=part.kind,
                storage_path=str(Path(spec.study_dir).resolve()),
                verbose=1,
                progress_reporter=progress_table(part),
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                # Ray keeps the latest checkpoint as well as the best `num_to_keep`: best and last.
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=1, checkpoint_score_attribute=part.metric, checkpoint_score_order=part.mode),
                callbacks=[CloseStoppedRuns(tracking_info.uri, tracking_info.experiment_id, part.epochs)],
            ),
        )
    handler = signal.getsignal(signal.SIGINT)
    grid = tuner.fit()
    interrupted = _fit_was_interrupted(handler)
    summary = summarize(part, grid, time.time() - started, resumed, slots)
    # Trials running at a Ctrl-C come back TERMINATED like finished ones: the signal tells them apart.
    summary["complete"] = summary["complete"] and not interrupted
    summary["fit_started_at"] = started  # unix time: with the runs' start times it splits worker start-up off
    return summary


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


PROGRESS_METRICS = {
    "covid": {"epoch": "epoch", "train_acc": "train acc", "val_acc": "val acc", "val_acc_time": "val acc (time)"},
    "vae": {"epoch": "epoch", "train_loss": "objective", "test_neg_elbo": "test -ELBO", "test_bits_per_dim": "bits/dim"},
}


# The chosen trial's test numbers, printed and kept in the summary beside the validation metric that chose it.
TEST_METRICS = {"covid": ("test_acc", "test_acc_std", "test_acc_time", "test_acc_time_std")}


def progress_table(part: Part) -> Any:
    """A compact table (searched parameters and a few metrics) every 15 s instead of a box per result."""
    from ray.tune import CLIReporter

    return CLIReporter(
        metric_columns=PROGRESS_METRICS[part.kind],
        parameter_columns=[*part.space, "group"],
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
        "kind": part.kind, "trials": len(results), "planned": part.total_trials,
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
            # reported beside the choice, never used for it
            "test": {k: best.metrics[k] for k in TEST_METRICS.get(part.kind, ()) if k in best.metrics},
        }
    return summary


def run_study(spec: StudySpec, parts: list[Part] | None = None) -> int:
    """Run every part not yet done; 0 when all finished, 1 when some trials errored, 130 when interrupted
    (resume continues it).

    Order: data and the checks that need it, then the study folder's lock, then Ray (and the check of its
    resources), and only then the MLflow parent run: a mistake found on the way leaves no half-made study.
    `parts` replaces the preset's parts (the benchmark runs a fixed workload); each part's summary is also
    written to STUDY_DIR/summary.json for scripts.
    """
    from study.lock import study_lock
    from study.preflight import check_part_data

    study_dir = Path(spec.study_dir)
    parts = parts if parts is not None else spec.parts()
    # Data first: a missing or bad file, or data on which every trial would fail, is one line here, in a
    # second, before a folder, a run or Ray exists.
    loaded = {part.kind: load_dataset(part) for part in parts if part.kind not in spec.done}
    warnings = [w for part in parts if part.kind in loaded for w in check_part_data(part, loaded[part.kind][0])]
    # Ray's new console output ignores a progress reporter; the classic one prints our compact table.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # One forced state snapshot per checkpoint is what makes every finished epoch survive a kill.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    with study_lock(study_dir):
        if spec.parent_run_id is None and (study_dir / STUDY_FILE).exists():
            from data.errors import DataError

            raise DataError(f"already holds a study; continue it with `study resume {study_dir}` or pick --name",
                            study_dir)
        if spec.parent_run_id is not None:  # resume: the parts another driver finished before we held the lock
            spec.done = load_spec(study_dir).done
        print(f"study: {spec.name} in {study_dir}", flush=True)
        for line in warnings:
            print(f"study: warning: {line}", flush=True)
        with study_ray(spec) as resources:
            from study.local_ray import check_resources

            check_resources(resources, spec.cpus_per_trial, spec.gpus_per_trial,
                            f"the Ray cluster at {spec.address}" if spec.address else "this machine")
            return _drive(spec, parts, loaded, resources)


def _drive(spec: StudySpec, parts: list[Part], loaded: dict[str, Any], resources: dict[str, float]) -> int:
    """The study itself, with the folder locked and Ray up."""
    from study import tracking

    study_dir = Path(spec.study_dir)
    if spec.parent_run_id is None:
        # The search space goes with the study, so analysis rebuilds the Optuna study without guessing it.
        spaces = {f"study.space.{p.kind}": json.dumps({"space": p.space, "metric": p.metric, "mode": p.mode})
                  for p in parts}
        local = spec.mlflow_uri == tracking.default_uri(study_dir)
        info = tracking.start_study(spec.mlflow_uri, spec.name, {
            "study.kind": spec.target, "study.preset": spec.preset, "study.storage": str(study_dir.resolve()),
            **spaces}, artifact_location=(study_dir / ARTIFACTS).resolve().as_uri() if local else None,
            params=tracking.study_params(dataclasses.asdict(spec), parts),
            files={"search_space.json": tracking.search_spaces(parts)})
        spec.experiment_id, spec.parent_run_id, spec.git_commit = info.experiment_id, info.parent_run_id, info.git_commit
        save_spec(spec)
    info = tracking.TrackingInfo(spec.mlflow_uri, spec.experiment_id, spec.parent_run_id, spec.git_commit or "unknown")
    summaries = []
    for part in parts:
        if part.kind in spec.done:
            print(f"study: {part.kind} already finished, kept as it is", flush=True)
            continue
        summary = run_part(spec, part, info, loaded[part.kind], resources)
        if part.kind == "covid" and summary["complete"]:
            summary["baselines"] = _baselines(info, loaded[part.kind][0])
        summaries.append(summary)
        (study_dir / SUMMARY_FILE).write_text(json.dumps(summaries, indent=2, default=str))
        print_summary(summary)
        if not summary["complete"]:
            print(f"study: interrupted with {summary['trials']} of {summary['planned']} {part.kind} trials; "
                  f"continue with: study resume {study_dir}", flush=True)
            return 130
        spec.done.append(part.kind)
        save_spec(spec)
    errored = sum(s["errored"] for s in summaries)
    trials = sum(s["trials"] for s in summaries)
    tracking.finish_study(info, "FINISHED", {f"{s['kind']}_{k}": v for s in summaries for k, v in s.items()
                                             if k != "best"} | {"summaries": summaries})
    mlflow_line = f"MLflow: mlflow ui --backend-store-uri {spec.mlflow_uri} --workers 1"
    if errored:
        counts = ", ".join(f"{s['kind']} {s['errored']}/{s['trials']}" for s in summaries if s["errored"])
        print(f"study: finished with {errored} of {trials} trials errored ({counts}); each error is the "
              f"'error' tag of its MLflow run. {mlflow_line}", flush=True)
    else:
        print(f"study: done. {mlflow_line}", flush=True)
    print(f"study: report: study report --storage {study_dir.parent} --name {spec.name}", flush=True)
    return 1 if errored else 0


def _baselines(info: Any, source: Any) -> dict[str, int]:
    """Fit the baselines of every data setting the COVID trials used (see study.baselines)."""
    from study.baselines import log_baselines

    started = time.time()
    settings, runs = log_baselines(info, source)
    if runs:
        print(f"study: baselines: {runs} runs for {settings} data setting(s) in {time.time() - started:.1f} s",
              flush=True)
    return {"settings": settings, "runs": runs}


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n== {summary['kind']}: {summary['trials']} trials ({summary['errored']} errored, "
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
