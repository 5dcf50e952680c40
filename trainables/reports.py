"""The one reading of a trial's `report(metrics)`: what every consumer of a report sees, or the trial's one-line
error.

A report goes to several stores at once (the trial's MLflow run, Ray Tune's result, ASHA, the Optuna searcher,
the progress line, the part's summary). Each of them used to read the plugin's dict its own way: MLflow kept only
Python ints and floats, Tune kept everything, Optuna kept the first value of a step and MLflow the last. So an
`np.float32` objective chose a trial in Optuna that the report never saw, and a NaN objective was "best". Here a
report is read once into a dict of plain Python numbers, and only that dict goes on; anything this reading cannot
make into a finite number fails the trial with one line (a `ReportError`) before any store sees it.

The rules:
- values: Python and numpy ints and floats, and 0-d tensors and arrays (anything with `.item()` and an empty
  shape), become `int` or `float`; a bool, string, list, dict, None or a number that is not finite is refused,
  naming the key and its type;
- names: what MLflow would refuse as a metric name (`acc@1`, `a//b`, more than 250 characters) and the keys Ray
  Tune fills in itself (`training_iteration`, `done`, ...) are refused at the first report that has them;
- epochs: `epoch` is an integer (numpy's too) that starts at 1 (on resume, at the one after the checkpoint's),
  goes up by one each report and never passes the config's `epochs`;
- the objective is in every report.

No torch, Ray or MLflow here: `trainables.testing` runs a plugin's fit in-process through the same reading.
"""
from __future__ import annotations

import json
import math
import numbers
import posixpath
import re
from pathlib import Path
from typing import Any

from trainables.names import EPOCH

# The keys Ray Tune adds to every result itself (ray.tune.result's AUTO_RESULT_KEYS, DONE, TRIAL_ID, ...; a test
# holds this list to Ray's): a plugin reporting one would overwrite Tune's own bookkeeping.
TUNE_KEYS = frozenset({
    "training_iteration", "time_total_s", "time_this_iter_s", "time_since_restore", "timestamp", "date",
    "episodes_total", "timesteps_total", "timesteps_since_restore", "iterations_since_restore", "node_ip",
    "hostname", "pid", "config", "checkpoint_dir_name", "done", "trial_id", "experiment_tag", "should_checkpoint",
    "__duplicate__", "__trial_info__",
})
# MLflow's rule for a metric name (mlflow.utils.validation.validate_param_and_metric_name and its path check; a
# test holds this to MLflow's): letters, digits, `_ - . / : ` and spaces, a normalised relative path, <= 250.
_METRIC_NAME = re.compile(r"[/\w.\- :]+")
MAX_NAME = 250
# Written by the study into a trial's checkpoint folder beside the plugin's own files: the epoch the checkpoint
# belongs to, so a resumed trial's first report is checked against it.
CHECKPOINT_EPOCH = ".study-epoch.json"


class ReportError(ValueError):
    """A report the study cannot take: one line saying what was wrong; it fails the trial (never the study)."""


def metric_name_problem(name: Any) -> str | None:
    """Why `name` cannot be a reported metric's name, or None."""
    if not isinstance(name, str):
        return f"a metric name must be a string, got {type(name).__name__} {name!r}"
    if name in TUNE_KEYS:
        return f"{name!r} is a key Ray Tune fills in itself; report it under another name"
    if not name or len(name) > MAX_NAME or not _METRIC_NAME.fullmatch(name):
        return (f"{name!r} is not a metric name MLflow takes: 1-{MAX_NAME} letters, digits, '_', '-', '.', '/', ':' "
                "or spaces")
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith(("..", "/")):
        return f"{name!r} is not a metric name MLflow takes: it must be a plain relative path (no '//', '..', '/x')"
    return None


def number(key: str, value: Any) -> int | float:
    """A reported value as a plain Python int or float (finite), or a ReportError naming the key and its type."""
    raw = value
    if not isinstance(value, (bool, str, bytes)) and hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()  # a 0-d numpy array or torch tensor (numpy scalars too): its Python number
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        module = type(raw).__module__.split(".")[0]
        kind = type(raw).__name__ if module == "builtins" else f"{module}.{type(raw).__name__}"
        shape = getattr(raw, "shape", None)
        return _refuse(f"{key}={_short(raw)} is a {kind}{f' of shape {tuple(shape)}' if shape else ''}, not a number "
                       "(report numbers: Python or numpy ints and floats, 0-d tensors or arrays)")
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        return _refuse(f"{key}={value}: not a finite number")
    return value


def _refuse(message: str) -> Any:
    raise ReportError(message)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class ReportReader:
    """Reads one trial's reports in order: `read(metrics)` returns the plain dict every store gets, or raises a
    ReportError. It remembers the first error (`error`), so a `train` that swallows the exception raised inside
    its `report` call still fails (`finish()` raises it again), as does one that never reported."""

    def __init__(self, metric: str, budget: int, first_epoch: int = 1, exact_start: bool = True):
        self.metric, self.budget = metric, int(budget)
        self.next_epoch, self.exact_start = int(first_epoch), exact_start
        self.reports = 0
        self.error: ReportError | None = None

    def read(self, metrics: Any) -> dict[str, int | float]:
        if self.error is not None:  # the trial has failed already: nothing more goes on
            raise self.error
        try:
            return self._read(metrics)
        except ReportError as err:
            self.error = err
            raise

    def _read(self, metrics: Any) -> dict[str, int | float]:
        if not isinstance(metrics, dict):
            raise ReportError(f"report() takes a dict of numbers, got a {type(metrics).__name__}")
        missing = [k for k in (EPOCH, self.metric) if k not in metrics]
        if missing:
            raise ReportError(f"report() takes a dict with {EPOCH!r} (1-based) and the objective {self.metric!r}; "
                              f"got keys {sorted(map(str, metrics))}")
        out: dict[str, int | float] = {}
        for key, value in metrics.items():
            problem = metric_name_problem(key)
            if problem:
                raise ReportError(problem)
            out[key] = number(key, value)
        epoch = out[EPOCH]
        if not isinstance(epoch, int):
            raise ReportError(f"{EPOCH}={metrics[EPOCH]!r}: an epoch is a whole number (an int), 1-based")
        self._check_epoch(epoch)
        self.reports += 1
        self.next_epoch, self.exact_start = epoch + 1, True
        return out

    def _check_epoch(self, epoch: int) -> None:
        expected = self.next_epoch
        if epoch > self.budget:
            raise ReportError(f"{EPOCH}={epoch} passes the budget: the config's epochs is {self.budget}")
        if self.reports == 0 and not self.exact_start:
            if epoch < 1:
                raise ReportError(f"{EPOCH}={epoch}: epochs are 1-based")
            return
        if epoch != expected:
            if self.reports == 0 and expected == 1:
                why = "epochs are 1-based: the first report is epoch 1"
            elif self.reports == 0:
                why = f"the trial resumed from the checkpoint of epoch {expected - 1}: go on at epoch {expected}"
            else:
                why = f"after epoch {expected - 1} comes {expected}: report each epoch once, in order"
            raise ReportError(f"{EPOCH}={epoch}: {why}")

    def finish(self) -> None:
        """After `train` returned: the error it swallowed, or that it never reported."""
        if self.error is not None:
            raise self.error
        if self.reports == 0 and (self.exact_start is False or self.next_epoch <= self.budget):
            raise ReportError("train returned before its first report: call report(metrics) once per epoch")


class EpochMarks:
    """Marks a trial's checkpoint folder with the epoch its state was written at, beside the plugin's own files.

    A plugin writes its state before each report, or only some epochs (a trial then resumes from the last state it
    wrote): so the mark moves only when the folder's files changed since the last report, and a resumed trial is
    held to go on after the epoch of its state, not of the report that handed the folder on."""

    def __init__(self) -> None:
        self._seen: frozenset | None = None

    def mark(self, checkpoint_dir: str | Path, epoch: int) -> bool:
        """Mark the folder after the report of `epoch`; False when it holds no state (Tune then keeps none)."""
        folder = Path(checkpoint_dir)
        if not folder.is_dir():
            return False
        files = frozenset((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns)
                          for p in folder.rglob("*") if p.name != CHECKPOINT_EPOCH and p.is_file()
                          for st in [p.stat()])
        if not files:
            return False
        if files != self._seen or not (folder / CHECKPOINT_EPOCH).is_file():
            write_checkpoint_epoch(folder, epoch)
            self._seen = files
        return True


def write_checkpoint_epoch(checkpoint_dir: str | Path, epoch: int) -> None:
    """Mark a checkpoint folder with the epoch it was reported with (the study does this, not the plugin)."""
    (Path(checkpoint_dir) / CHECKPOINT_EPOCH).write_text(json.dumps({EPOCH: int(epoch)}), encoding="utf-8")


def checkpoint_epoch(resume_from: str | Path | None) -> int | None:
    """The epoch a checkpoint folder was reported with; None on a fresh start or a folder with no mark."""
    if resume_from is None:
        return None
    path = Path(resume_from) / CHECKPOINT_EPOCH
    if not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get(EPOCH)
    return int(value) if isinstance(value, int) else None


def reader_for(metric: str, budget: int, resume_from: str | Path | None) -> ReportReader:
    """The reader of a trial that starts fresh (epoch 1) or resumes from `resume_from` (the epoch after its mark;
    a checkpoint with no mark, written by an older study, lets the first report say where it goes on)."""
    if resume_from is None:
        return ReportReader(metric, budget)
    last = checkpoint_epoch(resume_from)
    if last is None:
        return ReportReader(metric, budget, exact_start=False)
    return ReportReader(metric, budget, first_epoch=last + 1)
