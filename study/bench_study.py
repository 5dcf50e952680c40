"""Workload 4 of `study bench`: a study through the project's runner (Ray Tune + MLflow) against plain loops.

The homework preset's first covid runs, trained as a study (trials at 1 CPU each, as many at once as there are
cores; fractional GPUs on a GPU) and as plain loops one after another. See `study.bench` for the timing rules.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from study.bench import Sizes


def study_part(sizes: Sizes, device: str, data_dir: str):
    """The homework preset's covid part cut to its first N fixed runs, no search, no scheduler, no twin."""
    from study.presets import PRESETS

    base = PRESETS["homework"]["covid"]
    constants = dict(base.constants, epochs=sizes.study_epochs, time_twin=False, device=device, data_dir=data_dir)
    return dataclasses.replace(base, constants=constants, fixed=[dict(r) for r in base.fixed[:sizes.study_trials]],
                               num_samples=0, scheduler="none")


def study_concurrency(device: str) -> tuple[int, float]:
    """(concurrent trials, GPUs per trial): one trial per core on a CPU; k = min(8, cores) packed on one GPU."""
    cores = os.cpu_count() or 1
    if device == "cuda":
        k = max(1, min(8, cores))
        return k, 1.0 / k
    return cores, 0.0


def study_missing(data_dir: str | None) -> str | None:
    from data.errors import DataError
    from data.location import CONFIRMED_NAME, covid_file, resolve_data_dir

    try:
        covid_file(resolve_data_dir(data_dir), CONFIRMED_NAME, download=False)
    except DataError as err:
        return f"the real COVID data is needed for the study workload: {err}"
    return None


def _trial_results(part_dir: Path) -> dict[str, list[dict]]:
    """Every reported result (one per epoch), per trial, from the Tune experiment's result.json files."""
    return {f.parent.name: [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            for f in sorted(part_dir.glob("*/result.json"))}


def bench_study(sizes: Sizes, device: str, data_dir: str | None, workdir: Path) -> dict:
    """16 homework covid trials through `run_study` (Ray + MLflow) against the same 16 plain loops in a row."""
    import torch

    from data.location import resolve_data_dir
    from data.sequence_data import build_sequence_data, load_source
    from study import bench_plain
    from study.runner import StudySpec, run_study
    from study.tracking import default_uri
    from trainables.sequence import SequenceConfig

    data_dir = str(resolve_data_dir(data_dir).resolve())
    part = study_part(sizes, device, data_dir)
    trials, epochs = len(part.fixed), part.epochs
    what = f"{trials} homework covid trials x {epochs} epochs (real windows, batch {part.constants['batch_size']})"

    # (a) the plain loops, one after another, on the same windows (window building is not timed here). A trial's
    # time is its median epoch x epochs, not the sum: a burst of load from another process on a shared machine
    # must not make the plain side look slow (the measured sum is kept in the JSON too).
    source = load_source(data_dir, part.constants["date_range"])
    plain_epochs: list[list[float]] = []
    for run in part.fixed:
        cfg = SequenceConfig.from_dict({**part.constants, **run})
        d = build_sequence_data(cfg.data_config(), source=source)
        plain_epochs.append(bench_plain.sequence_epochs(
            d.x_train, d.y_train, d.x_test, d.y_test, cell=cfg.cell, hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers, batch_size=cfg.batch_size, lr=cfg.lr, epochs=epochs, device=device,
            seed=cfg.seed))
    plain_trial_s = [statistics.median(t) * len(t) for t in plain_epochs]
    plain_train_s = sum(plain_trial_s)
    plain_threads = torch.get_num_threads()

    # (b) the project's runner: Ray Tune trials at 1 CPU each, MLflow tracking, checkpoints every epoch.
    concurrent, gpus = study_concurrency(device)
    study_dir = workdir / "bench-study"
    spec = StudySpec(target="covid", preset="homework", name="bench-study", study_dir=str(study_dir),
                     mlflow_uri=default_uri(study_dir), cpus_per_trial=1.0, gpus_per_trial=gpus,
                     max_concurrent=concurrent, data_dir=data_dir)
    t0 = time.perf_counter()
    rc = run_study(spec, parts=[part])
    end_to_end = time.perf_counter() - t0
    summary = json.loads((study_dir / "summary.json").read_text())[-1]
    if rc != 0 or summary["errored"] or summary["trials"] != trials:
        raise RuntimeError(f"bench study did not finish cleanly (exit {rc}): {summary}")
    results = _trial_results(study_dir / part.kind)
    ours_epochs_s = sum(r["epoch_time_s"] for rs in results.values() for r in rs)
    # Ray's time_this_iter_s runs from one tune.report to the next: beyond the epoch it holds the previous
    # epoch's checkpoint write, MLflow logging and tune.report (and, for the first, the trial's start-up).
    extra = [[r["time_this_iter_s"] - r["epoch_time_s"] for r in rs] for rs in results.values()]
    per_report = statistics.median([e for es in extra for e in es[1:]] or [0.0])
    first_iter = statistics.mean([es[0] for es in extra if es] or [0.0])
    trial_epochs = trials * epochs
    wall = float(summary["wall_s"])
    overhead = (wall * concurrent - ours_epochs_s) / trials
    # Where it goes: inside the trial function but outside the epochs (MLflow run, windows, checkpoints, per-epoch
    # logging and tune.report, artefacts) vs between trials (Ray scheduling, actor reuse, searcher, state snapshots).
    in_trial = (float(summary["trial_train_s"]) - ours_epochs_s) / trials
    trial_time = ours_epochs_s / trials + overhead
    # A fixed cost per study, not per trial: from fit() to the first trial function's start (Ray starts a worker
    # per slot, which imports torch and the trainables; reused for every later trial). The marginal cost per
    # trial is the rest, and that is what grows with the number of trials.
    startup = _worker_startup(study_dir, part.kind, summary)
    marginal = (wall * concurrent - concurrent * startup - ours_epochs_s) / trials
    plain_rate, ours_rate = trial_epochs / plain_train_s, trial_epochs / wall
    return {
        "workload": "study", "what": what, "unit": "s/trial-epoch",
        "plain_s": plain_train_s / trial_epochs, "ours_s": wall / trial_epochs, "speedup": ours_rate / plain_rate,
        "plain_trial_epochs_per_s": plain_rate, "ours_trial_epochs_per_s": ours_rate,
        "ours_end_to_end_trial_epochs_per_s": trial_epochs / end_to_end,
        "trials": trials, "epochs": epochs, "concurrent_trials": concurrent, "cpus_per_trial": 1.0,
        "gpus_per_trial": gpus, "plain_threads": plain_threads, "plain_total_s": plain_train_s,
        "plain_trial_s": plain_trial_s, "plain_measured_total_s": sum(sum(t) for t in plain_epochs),
        "plain_epochs_s": plain_epochs, "ours_wall_s": wall, "ours_end_to_end_s": end_to_end,
        "ours_epochs_total_s": ours_epochs_s, "overhead_per_trial_s": overhead,
        "overhead_in_trial_s": in_trial, "overhead_between_trials_s": overhead - in_trial,
        "overhead_per_report_s": per_report, "overhead_trial_start_s": first_iter,
        "overhead_pct_of_trial": 100.0 * overhead / trial_time if trial_time > 0 else None,
        "study_startup_s": startup, "overhead_marginal_per_trial_s": marginal,
        "overhead_marginal_pct_of_trial": 100.0 * marginal / (ours_epochs_s / trials + marginal),
        "runner_summary": summary,
    }


def _worker_startup(study_dir: Path, experiment: str, summary: dict) -> float:
    """Seconds from fit() to the first trial's MLflow run (created as the trial function starts)."""
    from mlflow.tracking import MlflowClient

    from study.tracking import default_uri

    client = MlflowClient(default_uri(study_dir))
    exp = client.get_experiment_by_name(study_dir.name)
    runs = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    first = min(r.info.start_time for r in runs) / 1000.0
    return max(0.0, first - float(summary["fit_started_at"]))
