"""Studies in `study bench`: trials through the project's runner (Ray Tune + MLflow) against the same plain loops.

Threads (why these settings). A study's trials are small, and small kernels split badly over threads: intra-op
threading on 2 cores mostly adds synchronisation. So the runner gives each trial 1 CPU (Ray `cpus_per_trial=1`,
torch threads 1 in the trial) and runs as many trials at once as there are cores, while the plain loops run one
after another with torch's default threads, as the homework did. On a GPU (`--device cuda`) the study packs
trials on the GPU with fractional GPUs: 1 CPU and 1/k GPU each, k = min(8, cores).

A plain trial's time is its median epoch x epochs, not the sum: a burst of load from another process on a
shared machine must not make the plain side look slow (the measured sum is kept in the JSON too).

Overhead of Ray + MLflow per trial: (wall x concurrent slots - the trials' summed epoch times) / trials, i.e.
every slot-second not spent in an epoch (a training pass plus the held-out pass that follows it, on both sides):
trial start, reading data, MLflow runs and per-epoch logging, checkpoints, the end-of-run results and artefacts,
and time between trials. Part of it is paid once per study, not per trial (each Ray worker starts and imports
torch before its first trial, then is reused); the marginal cost of one more trial is the rest.

This module holds the covid study (workload `study`: the homework preset's first covid runs) and what any
study workload needs; `study.bench.vae_study` builds on it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from study.bench.timing import BenchRun, Sizes
from trainables.names import SUMMARY_FILE


# --------------------------------------------------------------------------------------- shared by studies
def study_concurrency(device: str) -> tuple[int, float]:
    """(concurrent trials, GPUs per trial): one trial per core on a CPU; k = min(8, cores) packed on one GPU."""
    cores = os.cpu_count() or 1
    if device == "cuda":
        k = max(1, min(8, cores))
        return k, 1.0 / k
    return cores, 0.0


def _trial_results(part_dir: Path) -> dict[str, list[dict]]:
    """Every reported result (one per epoch), per trial, from the Tune experiment's result.json files."""
    return {f.parent.name: [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            for f in sorted(part_dir.glob("*/result.json"))}


def trial_runs(study_dir: Path) -> list[Any]:
    """The study's trial runs (children of its MLflow run)."""
    from mlflow.tracking import MlflowClient

    from study.tracking import default_uri
    from trainables.names import PARENT_TAG

    client = MlflowClient(default_uri(study_dir))
    exp = client.get_experiment_by_name(study_dir.name)
    return [r for r in client.search_runs([exp.experiment_id]) if PARENT_TAG in r.data.tags]


def plain_side(plain_epochs: list[list[float]], threads: int) -> dict[str, Any]:
    """The plain loops' totals: each trial counted as its median epoch x epochs."""
    plain_trial_s = [statistics.median(t) * len(t) for t in plain_epochs]
    return {"plain_threads": threads, "plain_total_s": sum(plain_trial_s), "plain_trial_s": plain_trial_s,
            "plain_measured_total_s": sum(sum(t) for t in plain_epochs), "plain_epochs_s": plain_epochs}


def runner_side(part, run: BenchRun, name: str, epoch_time: Callable[[dict], float]) -> dict[str, Any]:
    """Run `part` through `run_study` and split its time: epochs (`epoch_time` of each reported result), the
    once-per-study worker start-up, and the overhead per trial (at the trial's start, per epoch report, at the
    end of the run, between trials)."""
    from study.runner import run_study
    from study.spec import StudySpec
    from study.studyfile import StudyFile
    from study.tracking import default_uri
    from trainables.names import TRIAL_TAG

    concurrent, gpus = study_concurrency(run.device)
    study_dir = run.workdir / name
    spec = StudySpec(target=part.trainable, preset="homework", name=name, study_dir=str(study_dir),
                     mlflow_uri=default_uri(study_dir), cpus_per_trial=1.0, gpus_per_trial=gpus,
                     max_concurrent=concurrent, data_dir=part.constants.get("data_dir"))
    t0 = time.perf_counter()
    rc = run_study(spec, StudyFile(name=None, parts=[part]))
    end_to_end = time.perf_counter() - t0
    summary = json.loads((study_dir / SUMMARY_FILE).read_text())[-1]
    trials = len(part.fixed)
    if rc != 0 or summary["errored"] or summary["trials"] != trials:
        raise RuntimeError(f"bench study did not finish cleanly (exit {rc}): {summary}")
    results = _trial_results(study_dir / part.name)
    epochs_s = sum(epoch_time(r) for rs in results.values() for r in rs)
    # Ray's time_this_iter_s runs from one tune.report to the next: beyond the epoch it holds the previous
    # epoch's checkpoint write, MLflow logging and tune.report (and, for the first, the trial's start-up).
    extra = [[r["time_this_iter_s"] - epoch_time(r) for r in rs] for rs in results.values()]
    per_report = statistics.median([e for es in extra for e in es[1:]] or [0.0])
    first_iter = statistics.mean([es[0] for es in extra if es] or [0.0])
    wall = float(summary["wall_s"])
    overhead = (wall * concurrent - epochs_s) / trials
    # Inside the trial function but outside the epochs vs between trials (Ray scheduling, actor reuse, searcher).
    in_trial = (float(summary["trial_train_s"]) - epochs_s) / trials
    runs = trial_runs(study_dir)
    # A fixed cost per study, not per trial: from fit() to the first trial function's start (Ray starts a worker
    # per slot, which imports torch and the trainables; reused for every later trial).
    first = min(r.info.start_time for r in runs) / 1000.0
    startup = max(0.0, first - float(summary["fit_started_at"]))
    marginal = (wall * concurrent - concurrent * startup - epochs_s) / trials
    # After the last report: the end-of-run results, artefacts and closing the MLflow run (the run starts a few
    # ms after the trial function, so this is a slight underestimate).
    total_s = {rs[-1]["trial_id"]: rs[-1]["time_total_s"] for rs in results.values() if rs}
    end_of_run = [(r.info.end_time - r.info.start_time) / 1000.0 - total_s[r.data.tags[TRIAL_TAG]]
                  for r in runs if r.data.tags.get(TRIAL_TAG) in total_s and r.info.end_time]
    trial_epochs = trials * part.epochs
    trial_time = epochs_s / trials + overhead
    return {
        "trials": trials, "epochs": part.epochs, "concurrent_trials": concurrent, "cpus_per_trial": 1.0,
        "gpus_per_trial": gpus, "ours_wall_s": wall, "ours_end_to_end_s": end_to_end,
        "ours_trial_epochs_per_s": trial_epochs / wall, "ours_end_to_end_trial_epochs_per_s": trial_epochs / end_to_end,
        "ours_epochs_total_s": epochs_s, "overhead_per_trial_s": overhead,
        "overhead_in_trial_s": in_trial, "overhead_between_trials_s": overhead - in_trial,
        "overhead_per_report_s": per_report, "overhead_trial_start_s": first_iter,
        "overhead_end_of_run_s": statistics.mean(end_of_run) if end_of_run else None,
        "overhead_pct_of_trial": 100.0 * overhead / trial_time if trial_time > 0 else None,
        "study_startup_s": startup, "overhead_marginal_per_trial_s": marginal,
        "overhead_marginal_pct_of_trial": 100.0 * marginal / (epochs_s / trials + marginal),
        "runner_summary": summary, "results": results,
    }


def study_row(workload: str, what: str, plain: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """One table row for a study: trial-epochs per second on each side (plain: summed trial times; ours: wall)."""
    trial_epochs = ours["trials"] * ours["epochs"]
    plain_rate = trial_epochs / plain["plain_total_s"]
    ours = {k: v for k, v in ours.items() if k != "results"}
    return {"workload": workload, "what": what, "unit": "s/trial-epoch",
            "plain_s": plain["plain_total_s"] / trial_epochs, "ours_s": ours["ours_wall_s"] / trial_epochs,
            "speedup": ours["ours_trial_epochs_per_s"] / plain_rate, "plain_trial_epochs_per_s": plain_rate,
            **plain, **ours}


# --------------------------------------------------------------------------------------- the covid study
def study_part(sizes: Sizes, device: str, data_dir: str):
    """The homework preset's covid part cut to its first N fixed runs, no search, no scheduler; one model per trial
    (one seed, no time twin), as each plain loop trains one (`study.bench.fused` times a trial's K models)."""
    from study.studyfile import preset_part

    base = preset_part("homework", "covid")
    constants = dict(base.constants, epochs=sizes.study_epochs, seeds=1, time_twin=False, device=device,
                     data_dir=data_dir)
    return dataclasses.replace(base, constants=constants, fixed=[dict(r) for r in base.fixed[:sizes.study_trials]],
                               num_samples=0, scheduler="none")


def study_missing(data_dir: str | None) -> str | None:
    from data.errors import DataError
    from data.location import CONFIRMED_NAME, covid_file, resolve_data_dir

    try:
        covid_file(resolve_data_dir(data_dir), CONFIRMED_NAME, download=False)
    except DataError as err:
        return f"the real COVID data is needed for the study workload: {err}"
    return None


def bench_study(run: BenchRun) -> dict:
    """16 homework covid trials through `run_study` (Ray + MLflow) against the same 16 plain loops in a row."""
    import torch

    from data.location import resolve_data_dir
    from data.sequence_data import build_sequence_data, load_source
    from study.bench import plain as bench_plain
    from study.bench.workloads import held_out
    from trainables.sequence import SequenceConfig

    data_dir = str(resolve_data_dir(run.data_dir).resolve())
    part = study_part(run.sizes, run.device, data_dir)
    what = (f"{len(part.fixed)} homework covid trials x {part.epochs} epochs "
            f"(real windows, batch {part.constants['batch_size']})")

    # (a) the plain loops, one after another, on the same windows (window building is not timed here); each epoch
    # they evaluate the validation and test parts together, as our trials evaluate both.
    source = load_source(data_dir, part.constants["date_range"])
    plain_epochs: list[list[float]] = []
    for r in part.fixed:
        cfg = SequenceConfig.from_dict({**part.constants, **r})
        d = build_sequence_data(cfg.data, source=source)
        split = d.splits[d.split]
        held = held_out(split)
        plain_epochs.append(bench_plain.sequence_epochs(
            d.x[split.train], d.y[split.train], d.x[held], d.y[held], cell=cfg.cell, hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers, batch_size=cfg.batch_size, lr=cfg.lr, epochs=part.epochs,
            device=run.device, seed=cfg.data.seed))
    plain = plain_side(plain_epochs, torch.get_num_threads())

    # (b) the project's runner: Ray Tune trials at 1 CPU each, MLflow tracking, checkpoints every epoch.
    ours = runner_side(part, run, "bench-study", lambda r: r["epoch_time_s"] + r["eval_time_s"])
    return study_row("study", what, plain, ours)


def study_note(row: dict[str, Any], quick: bool) -> list[str]:
    """The lines under the table for the covid study."""
    lines = ["", f"Study: {row['concurrent_trials']} trials at once, {row['cpus_per_trial']:g} CPU each "
                 f"(plain loops: one after another, {row['plain_threads']} torch threads). Ray + MLflow overhead "
                 f"{row['overhead_per_trial_s']:.2f} s per trial = {row['overhead_pct_of_trial']:.0f}% of a "
                 f"trial's time ({row['overhead_in_trial_s']:.2f} s inside the trial function outside its "
                 f"epochs: {row['overhead_trial_start_s']:.2f} s at the start, {row['overhead_per_report_s'] * 1000:.0f} ms "
                 f"per epoch report; {row['overhead_between_trials_s']:.2f} s between trials); end to end incl. Ray start {row['ours_end_to_end_trial_epochs_per_s']:.2f} "
                 "trial-epochs/s.",
             "",
             f"Of that, {row['study_startup_s']:.1f} s is paid once per study, not per trial (each of the "
             f"{row['concurrent_trials']} Ray workers starts and imports torch before its first trial, then is "
             f"reused); the marginal cost of one more trial is {row['overhead_marginal_per_trial_s']:.2f} s = "
             f"{row['overhead_marginal_pct_of_trial']:.0f}% of a trial's time here, "
             f"{100 * row['overhead_marginal_per_trial_s'] / 5:.0f}% of a 5-second trial."]
    if quick:
        lines.append(f"(--quick: {row['trials']} tiny trials x {row['epochs']} epochs, so the per-trial overhead "
                     "dominates this ratio; the full run's 16 x 10 is the one to read.)")
    return lines
