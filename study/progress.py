"""Progress of one part while Tune runs it: one compact line, not Ray's trial table.

Ray's table of every trial, every 15 s, made the homework preset print 470 KB in 33 minutes with no sign of
how long was left. This line says what a user asks: how many trials are done, running, waiting, pruned or
failed, how many epochs of those planned have run, the best objective so far and the time left. On a terminal
it is rewritten in place once a second; to a file or a pipe it is a new line every `interval_s` seconds.
`study run --verbose` keeps Ray's table instead.

Time left: the epochs still to run (each unfinished trial's remaining ones, and every trial not yet started at
the full budget) times the median time of an epoch so far (Tune's `time_this_iter_s`: training, evaluation,
checkpoint and logging), shared by the slots that run at once. ASHA may
stop some of those trials early, so it is an upper estimate, and the line says so with "<=".
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from ray.tune import ProgressReporter

from trainables.names import EARLY_STOPPED

TRAINING_ITERATION = "training_iteration"


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(name: str, trials: list[Any], planned: int, epochs: int, slots: int, metric: str, mode: str,
                  elapsed_s: float) -> str:
    """The line itself, from Tune's trials (status, last_result): a pure function, so a test can check it."""
    counts = {"done": 0, "running": 0, "pruned": 0, "failed": 0}
    done_epochs, epoch_times, best = 0, [], None
    for trial in trials:
        result = trial.last_result or {}
        ran = int(result.get(TRAINING_ITERATION, 0))
        done_epochs += ran
        if result.get("time_this_iter_s") is not None:  # the whole epoch: training, evaluation, checkpoint, logs
            epoch_times.append(float(result["time_this_iter_s"]))
        if trial.status == "ERROR":
            counts["failed"] += 1
        elif trial.status == "TERMINATED":
            counts["pruned" if ran < epochs and not result.get(EARLY_STOPPED) else "done"] += 1
        elif trial.status == "RUNNING":
            counts["running"] += 1
        value = result.get(metric)
        if value is not None and (best is None or (value > best if mode == "max" else value < best)):
            best = float(value)
    pending = max(0, planned - counts["done"] - counts["pruned"] - counts["failed"] - counts["running"])
    remaining = sum(max(0, epochs - int((t.last_result or {}).get(TRAINING_ITERATION, 0)))
                    for t in trials if t.status not in ("TERMINATED", "ERROR"))
    remaining += max(0, planned - len(trials)) * epochs
    planned_epochs = done_epochs + remaining
    left = (f"<= {_duration(remaining * statistics.median(epoch_times) / max(1, slots))} left" if epoch_times
            else "time left: after the first epoch")
    best_text = f"best {metric} {best:.4f}" if best is not None else f"best {metric} -"
    return (f"{name}: {counts['done']} done, {counts['running']} running, {pending} waiting, {counts['pruned']} "
            f"pruned, {counts['failed']} failed of {planned} trials | epochs {done_epochs}/{planned_epochs} | "
            f"{best_text} | {_duration(elapsed_s)} elapsed, {left}")


def console_line(text: str) -> None:
    """A line of the study's own (a failed trial) while the progress line may be on screen: on a terminal it takes
    the progress line's place (rewritten below it at the next report); to a file or a pipe, a line of its own."""
    if sys.stdout.isatty():
        sys.stdout.write("\r\x1b[K")
    print(text, flush=True)


class PartProgress(ProgressReporter):
    """Tune's progress reporter for one part. Pickled with the experiment (so a resumed study keeps it): it
    holds plain values only and finds the terminal when it writes."""

    def __init__(self, name: str, planned: int, epochs: int, slots: int, metric: str, mode: str,
                 interval_s: float = 30.0):
        self.name, self.planned, self.epochs, self.slots = name, planned, epochs, slots
        self.metric, self.mode, self.interval_s = metric, mode, interval_s
        self.started = time.time()
        self.last = 0.0

    def setup(self, start_time: float | None = None, **kwargs: Any) -> None:
        self.started = start_time or time.time()

    def should_report(self, trials: list[Any], done: bool = False) -> bool:
        interval = 1.0 if sys.stdout.isatty() else self.interval_s
        return done or time.time() - self.last >= interval

    def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
        self.last = time.time()
        line = progress_line(self.name, trials, self.planned, self.epochs, self.slots, self.metric, self.mode,
                             self.last - self.started)
        if sys.stdout.isatty():
            sys.stdout.write("\r\x1b[K" + line + ("\n" if done else ""))
            sys.stdout.flush()
        else:
            print(f"study: {line}", flush=True)
