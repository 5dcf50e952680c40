"""Where a finished study's time went: `study show --profile` and `study run --profile`.

A part's budget is its wall clock times the trials it ran at once (`wall_s * concurrent` from the folder's
summary.json): the slot-seconds it held. Each trial's share of it splits into training (the sum of its
`epoch_time_s`), evaluation (`eval_time_s`), end-of-run work (`end_time_s` of its summary.json, else the VAE's
`iw_time_s`) and the rest of its MLflow run's wall time (trial overhead: checkpoints, logging, reports); what
no trial run covers is study overhead (worker start-up, the searcher, idle slots). Every number is also a share
of the budget, so two runs of one preset compare as ratios even on machines of different speed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.api import Study
from analysis.results import RunInfo
from analysis.store import mlflow_reader, reading
from data.errors import DataError
from study.spec import load_summaries
from trainables.names import END_TIME as END, EVAL_TIME as EVAL, SUMMARY, SUMMARY_FILE

# The trainables log these two under their literal names (no constant for them in trainables/).
TRAIN, IW = "epoch_time_s", "iw_time_s"
# The seconds of a trial, in the order they add up to its wall time.
PIECES = ("train_s", "eval_s", "end_s", "overhead_s")


def read_summaries(folder: Path | None) -> dict[str, dict[str, Any]]:
    """The folder's summary.json by part: the only record of a part's wall time and concurrency."""
    if folder is None:
        raise DataError(f"the profile needs the study folder's {SUMMARY_FILE}; this machine does not see the folder",
                        "--mlflow-uri")
    if not (Path(folder) / SUMMARY_FILE).exists():
        raise DataError("no part has finished yet (no summary of one)", Path(folder) / SUMMARY_FILE)
    return load_summaries(folder)


def _run_times(client: MlflowClient, experiment_id: str) -> dict[str, tuple[int, int | None]]:
    """run id -> (start, end) in ms: `open_study` keeps no end times, one search gets them all."""
    out: dict[str, tuple[int, int | None]] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        out.update({r.info.run_id: (r.info.start_time or 0, r.info.end_time) for r in page})
        token = page.token
        if not token:
            return out


def _epoch_sums(study: Study, client: MlflowClient) -> dict[str, dict[str, tuple[int, float]]]:
    """run id -> metric -> (epochs, seconds) for the two per-epoch times; failed runs are not in `study.history`,
    so theirs are read here (latest value per step, as analysis.results reads a resumed trial's re-logged step)."""
    ids = dict(zip(zip(study.trials.part, study.trials.trial_id), study.trials.run_id))
    out: dict[str, dict[str, tuple[int, float]]] = {}
    times = study.history[study.history.metric.isin((TRAIN, EVAL))]
    for (part, trial_id, metric), rows in times.groupby(["part", "trial_id", "metric"]):
        out.setdefault(ids[(part, trial_id)], {})[metric] = (len(rows), float(rows.value.sum()))
    for run in study.results.failed:
        for metric in (TRAIN, EVAL):
            by_step = {m.step: m.value for m in sorted(client.get_metric_history(run.run_id, metric),
                                                       key=lambda m: (m.step, m.timestamp))}
            if by_step:
                out.setdefault(run.run_id, {})[metric] = (len(by_step), float(sum(by_step.values())))
    return out


def _end_of_run(summary_path: Path | None, metrics: dict[str, float]) -> float:
    """`end_time_s` of the run's summary.json, else `iw_time_s` (older VAE runs), from it or the metrics; else 0."""
    summary: dict[str, Any] = {}
    if summary_path is not None:
        try:
            summary = json.loads(Path(summary_path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"unreadable run summary ({err})", summary_path) from None
    for key in (END, IW):
        for source in (summary, metrics):
            if isinstance(source.get(key), (int, float)):
                return float(source[key])
    return 0.0


def _shares(row: dict[str, Any], keys: tuple[str, ...], budget: float | None) -> None:
    """Seconds rounded to ms (what MLflow's times hold) and each as a % of the budget (None without one)."""
    for key in keys:
        known = row[key] is not None and budget
        row[key[:-2] + "_pct"] = round(100 * row[key] / budget, 2) if known else None
        row[key] = round(row[key], 3) if row[key] is not None else None


def _trial_row(t: Any, start: int, end: int, got: dict[str, tuple[int, float]], run: RunInfo) -> dict[str, Any]:
    """One ended trial run: its seconds by kind; the overhead is what its run's wall time holds beyond them."""
    row = {"trial_id": t.trial_id, "group": t.group, "state": t.state, "start": start,
           "epochs": got.get(TRAIN, (0, 0.0))[0], "train_s": got.get(TRAIN, (0, 0.0))[1],
           "eval_s": got.get(EVAL, (0, 0.0))[1], "end_s": _end_of_run(run.artifacts.get(SUMMARY), run.metrics),
           "wall_s": (end - start) / 1000}
    row["overhead_s"] = row["wall_s"] - sum(row[k] for k in PIECES[:3])
    return row


def _notes(summary: dict[str, Any], rows: list[dict[str, Any]], running: int) -> list[str]:
    """What a reader needs to read the part's numbers right."""
    notes = []
    if rows and not any(r["eval_s"] for r in rows):
        notes.append(f"no {EVAL} logged: evaluation is inside training ({TRAIN}), as older runs timed it")
    if running:
        notes.append(f"{running} run(s) not ended (still running, or left by a killed driver): not counted")
    if not summary:
        notes.append(f"no entry in {SUMMARY_FILE} for this part: no budget")
    elif summary.get("overhead_per_trial_s", 0) is None:
        notes.append("resumed: wall_s is the last driver's only, trial walls span the interruption")
    return notes


def profile(study: Study) -> list[dict[str, Any]]:
    """Per part (summary.json's order): its budget, one row per trial by start time, and the total line.

    A part only in MLflow (its summary lost to a resume, which rewrites summary.json) gets no budget: its
    seconds are given, its shares are None."""
    summaries = read_summaries(study.folder)
    # The run times and failed runs' curves, read as open_study reads: a snapshot of the store, never the store
    with reading(study.tracking_uri), mlflow_reader(study.tracking_uri) as uri:
        client = MlflowClient(uri)
        times = _run_times(client, study.results.experiment_id)
        sums = _epoch_sums(study, client)
    runs = {r.run_id: r for r in (*study.results.runs, *study.results.failed)}
    out = []
    for part in [*summaries, *(p for p in dict.fromkeys(study.trials.part) if p not in summaries)]:
        s = summaries.get(part, {})
        wall, slots = s.get("wall_s"), s.get("concurrent")
        budget = float(wall) * int(slots) if wall is not None and slots else None
        rows, running = [], 0
        for t in study.trials[study.trials.part == part].itertuples():
            start, end = times.get(t.run_id, (0, None))
            if end is None:
                running += 1
            else:
                rows.append(_trial_row(t, start, end, sums.get(t.run_id, {}), runs[t.run_id]))
        rows.sort(key=lambda r: (r["start"], r["trial_id"]))
        total = {k: sum(r[k] for r in rows) for k in ("epochs", *PIECES[:3], "wall_s")}
        total["trial_overhead_s"] = sum(r["overhead_s"] for r in rows)
        total["study_overhead_s"] = budget - total["wall_s"] if budget is not None else None
        notes = _notes(s, rows, running)
        for r in rows:
            r["start"] = pd.to_datetime(r["start"], unit="ms").isoformat()
            _shares(r, (*PIECES, "wall_s"), budget)
        _shares(total, ("train_s", "eval_s", "end_s", "trial_overhead_s", "study_overhead_s", "wall_s"), budget)
        out.append({"part": part, "trials": s.get("trials", len(rows)), "runs": len(rows), "wall_s": wall,
                    "concurrent": slots, "budget_s": budget, "trial_rows": rows, "total": total, "notes": notes})
    return out

COLUMNS = (("train_s", "training"), ("eval_s", "evaluation"), ("end_s", "end-of-run"), ("overhead_s", "overhead"),
           ("wall_s", "trial wall"))
TOTALS = (("train_s", "training"), ("eval_s", "evaluation"), ("end_s", "end-of-run"),
          ("trial_overhead_s", "trial overhead"), ("study_overhead_s", "study overhead"))


def _cell(row: dict[str, Any], key: str, paren: bool = False) -> str:
    pct = row.get(key[:-2] + "_pct")
    if pct is None:
        return f"{row[key]:.1f} s"
    return f"{row[key]:.1f} s ({pct:.1f}%)" if paren else f"{row[key]:.1f} s {pct:.1f}%"


def format_profile(parts: list[dict[str, Any]]) -> str:
    """The table `profile` returns as text: a head line, one line per trial, the total line, any notes."""
    lines = []
    for p in parts:
        budget = (f"wall {p['wall_s']:.1f} s x {p['concurrent']} at once = {p['budget_s']:.1f} slot-s"
                  if p["budget_s"] is not None else "no wall time")
        lines.append(f"{p['part']}: {p['trials']} trials ({p['runs']} ended runs), {budget}")
        head = ["trial", "group", "state", "start UTC", "epochs", *(name for _, name in COLUMNS)]
        body = [[r["trial_id"], r["group"], r["state"], r["start"][11:19], str(r["epochs"]),
                 *(_cell(r, k) for k, _ in COLUMNS)] for r in p["trial_rows"]]
        widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
        for row in (head, *body):
            lines.append("  " + "  ".join(v.ljust(w) if i < 4 else v.rjust(w)
                                          for i, (v, w) in enumerate(zip(row, widths))).rstrip())
        t = p["total"]
        lines.append(f"  {p['part']} total: {t['epochs']} epochs; "
                     + ", ".join(f"{name} {_cell(t, k, paren=True)}" for k, name in TOTALS if t[k] is not None)
                     + f"; trial walls {_cell(t, 'wall_s', paren=True)}")
        lines.extend(f"  note: {n}" for n in p["notes"])
    return "\n".join(lines)


def print_after_run(study_dir: str | Path) -> None:
    """`study run --profile`: the breakdown once the study has finished well. A study that ran fine still
    exits 0 when its profile cannot be read, so the reason is printed instead of raised."""
    from analysis import open_study

    try:
        parts = profile(open_study(study_dir))
    except DataError as err:
        print(f"study: no profile: {err}", flush=True)
        return
    print("\nwhere the time went (share of wall x concurrent):\n" + format_profile(parts), flush=True)
