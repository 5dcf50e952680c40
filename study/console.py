"""What a part's Tune fit prints: the study's own lines, and of Ray's only what tells a study's user something.

A failed trial is one line, its error and where its full traceback is (`FailedTrialLines`): Ray's own report of it
is about 40 lines of traceback from Ray's internals around the trainable's, for every failed trial, which buried
the study's progress line. The full traceback is still kept twice: in the trial's folder (`error.txt`, which Tune
writes) and in its MLflow run (the `error_traceback` tag beside `error`).

`quiet_tune()` turns off, for the fit, only what says nothing to a study's user, each by its public switch or its
logger's name:
- Tune's traceback of each failed trial (`TUNE_PRINT_ALL_TRIAL_ERRORS=0`, Tune's documented switch; a user who sets
  it keeps Ray's tracebacks);
- Ray's warning that a scheduler reads `experiment_path` of its TrialRunner (the study's schedulers read it to
  keep new trials in the experiment's folder: `study.space.keep_in_experiment`), once per run;
- after a Ctrl-C, Tune's "Resume experiment with: Tuner.restore(...)" (the study prints its own `study resume`
  line) and "Trials did not complete: [...]" (the study's summary counts them, and each failed trial had its line).
Every other warning and error of Ray stays visible.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

from ray import tune

from study.progress import console_line

QUIET_ENV = {"TUNE_PRINT_ALL_TRIAL_ERRORS": "0"}
# (logger, how the message starts): Ray's log records that say nothing to a study's user.
UNSAID = (
    ("ray.tune.execution.tune_controller", "You are trying to access experiment_path interface"),
    ("ray.tune.tune", "Experiment has been interrupted, but the most recent state was saved"),
    ("ray.tune.tune", "Trials did not complete"),
)
MAX_ERROR_CHARS = 300


class _Unsaid(logging.Filter):
    """Drops the records of one logger whose message starts with one of `starts`."""

    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


@contextmanager
def quiet_tune() -> Iterator[None]:
    """For a Tune fit in this process: the switches and filters of the module docstring, put back after."""
    before = {k: os.environ.get(k) for k in QUIET_ENV}
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)  # the user's own setting wins
    filters = []
    for name in dict.fromkeys(name for name, _ in UNSAID):
        found = _Unsaid(tuple(start for logger, start in UNSAID if logger == name))
        logging.getLogger(name).addFilter(found)
        filters.append((name, found))
    try:
        yield
    finally:
        for name, found in filters:
            logging.getLogger(name).removeFilter(found)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def error_text(error: BaseException | None, error_file: str | None) -> str:
    """One line for a trial's error: the trainable's exception as `Type: message` (a `RayTaskError` carries it as
    its `cause`; the study's own `OwnError` already names the original), else the last line of Tune's error file;
    whitespace folded, at most MAX_ERROR_CHARS."""
    from study.faults import OwnError

    cause = getattr(error, "cause", None) or error
    if isinstance(cause, OwnError):
        text = str(cause)
    elif cause is not None:
        text = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    else:
        lines = _read(error_file).strip().splitlines()
        text = lines[-1] if lines else "no error recorded"
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


def _read(path: str | None) -> str:
    if not path or not os.path.isfile(path):
        return ""
    with open(path, errors="replace") as f:
        return f.read()


class FailedTrialLines(tune.Callback):
    """Driver side: one line per failed trial, named as `study show` names it (its trial id); and one per retry of
    a trial whose worker died (what `--max-failures` is for: a trial's own error fails it, see study.faults).

    Pickled with the experiment and back on restore: it holds only the part's name."""

    def __init__(self, part: str):
        self.part = part

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = error_text(error_of(trial), trial.error_file)
        console_line(f"study: {self.part}: trial {trial.trial_id} failed: {error}; full traceback: {kept(trial)}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = error_of(trial)
        if not _worker_died(error):
            return  # its own error: failed at once by its retry (study.faults), then its one line above
        console_line(f"study: {self.part}: trial {trial.trial_id}: its worker died ({error_text(error, None)}); "
                     f"retried from its last checkpoint; details: {kept(trial)}")


def error_of(trial: Any) -> BaseException | None:
    """The trial's last error as Tune pickled it: from the driver's staging folder, where Tune writes it before a
    callback hears of the error (`Trial.get_pickled_error` reads the study folder's copy, synced later)."""
    from ray import cloudpickle

    path = trial.pickled_error_file
    if path and os.path.isfile(path):
        with open(path, "rb") as f:
            return cloudpickle.load(f)
    return trial.get_pickled_error()


def kept(trial: Any) -> str:
    """Where the trial's error file is kept: its folder in the study folder (`Trial.path`, where Tune syncs what it
    writes first into the driver's staging folder under Ray's session directory, which is not the study's)."""
    name = os.path.basename(trial.error_file or "") or "error.txt"
    return os.path.join(trial.path, name) if trial.path else (trial.error_file or "?")


def _worker_died(error: BaseException | None) -> bool:
    from ray.exceptions import RayActorError

    return isinstance(getattr(error, "cause", None) or error, RayActorError)
