"""A study as pandas DataFrames, for analysis scripts: `open_study(folder or name)`.

```python
from analysis import open_study
study = open_study("studies/NAME")            # a study folder; or open_study("NAME", tracking_uri="http://...")
study.trials      # one row per trial: part, trial_id, group, state, every config value (typed), final metrics
study.history     # long format: part, trial_id, epoch, metric, value
study.baselines   # one row per baseline run (data setting, baseline, scored split) of a part that has them
study.chosen("covid")   # the chosen trial's row, its test numbers and the baselines on the same windows
```
Any part, built-in or plugin: nothing here imports a trainable (so no torch), the part, its objective and the
types of its settings come from what the study logged. Columns and units: docs/ANALYSIS.md. The numbers are the
report's: the same loader (`analysis.results`) and the same choice (`StudyResults.chosen`, the best on the part's
objective, a validation number). Read-only: it opens a study while it runs, without its lock, and never creates,
migrates or locks a store (`analysis.store`); a study folder is read where it lies now, copied, moved or renamed.
Whatever is wrong with what it reads (a missing, empty, foreign or corrupted study.json, mlflow.db or optuna.db, a
tracking server that does not answer) is one `data.errors.DataError` line.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.results import RunInfo, StudyResults, load_study
from analysis.store import folder_state
from analysis.trial_states import optuna_states, trial_state
from data.errors import DataError
from trainables.names import (BASELINE, BASELINE_TAG, EPOCH, EPOCH_TIME, MLFLOW_DB, STUDY_STATE, TEST_PREFIX,
                              TRAIN_TIME_TAG)

ID_COLUMNS = ["part", "trial_id", "run_id", "group", "state", "chosen"]


@dataclass
class Study:
    """What `open_study` returns; see the module docstring."""

    name: str
    folder: Path | None
    tracking_uri: str
    trials: pd.DataFrame
    baselines: pd.DataFrame
    results: StudyResults
    _history: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def history(self) -> pd.DataFrame:
        """Every finished trial's curves, long format: read from the store the first time it is asked for (all
        trials' at once), since it is what grows with a study's epochs and trials and most readers need none."""
        if self._history is None:
            runs = [r for r in self.results.runs if r.trainable and r.trainable != BASELINE]
            self._history = pd.DataFrame(
                [{"part": r.part, "trial_id": r.trial_id, "epoch": int(step), "metric": key, "value": float(value)}
                 for r in runs for key, (steps, values) in sorted(r.history.items()) if key != EPOCH
                 for step, value in zip(steps, values)],
                columns=["part", "trial_id", "epoch", "metric", "value"])
        return self._history

    def objective(self, part: str) -> tuple[str, str]:
        """(metric, "max"|"min"): what the part's trials were chosen on, as the study logged it."""
        return self.results.objective(part)

    def config_keys(self, part: str) -> list[str]:
        """The config keys the part's trials logged (every value a trial ran with), sorted."""
        return sorted(set().union(*(r.params for r in self.results.select(part=part))) - set(ID_COLUMNS))

    def chosen(self, part: str) -> dict[str, Any]:
        """The part's chosen trial (its row), the objective that chose it, the test numbers reported for it and,
        where the part has baseline runs, the baselines on its data setting (validation chose none of this: test
        numbers are reported, not compared)."""
        rows = self.trials[(self.trials.part == part) & self.trials.chosen]
        if rows.empty:
            raise DataError(f"no finished {part} trial with its objective yet", self.folder or self.tracking_uri)
        row = rows.iloc[0]
        config = set(self.config_keys(part))  # test_frac is a setting, not a test number
        test = {k: float(row[k]) for k in row.index
                if k.startswith(TEST_PREFIX) and k not in config and pd.notna(row[k])}
        out: dict[str, Any] = {"trial": row, "metric": self.objective(part)[0], "test": test}
        view = self.results.of_part(part)
        if view.baselines(part):  # those of the trial's own data setting (none where the logs cannot tell which)
            run = next(r for r in view.runs if r.run_id == row.run_id)
            found = sorted(view.baselines_of(run) or [], key=lambda b: (b.params.get("split", ""), _baseline(b)))
            out["baselines"] = pd.DataFrame([{"baseline": _baseline(b), "split": b.params.get("split", ""),
                                              **b.metrics} for b in found], columns=None if found else
                                            ["baseline", "split"])
        return out

    def model(self, part: str, trial: str | None = None, device: str = "cpu") -> Any:
        """The chosen trial's model of `part` (or trial `trial`), ready on `device`, with its config: a
        `analysis.models.LoadedModel` (`.predict(x)`, `.config`, and the trainable's own model's methods, e.g.
        `.latest(["Italy"])` for covid, `.sample(16)` for the VAE). Imports the trainable (torch for the built-ins)."""
        from analysis.models import load_model

        return load_model(self, part, trial, device)


def _baseline(run: RunInfo) -> str:
    return run.params.get("baseline") or run.tags.get(BASELINE_TAG, "?")


def open_study(path_or_name: str | Path, storage: str | Path = "studies", tracking_uri: str | None = None) -> Study:
    """A study folder (or a study's name under `storage`), or with `tracking_uri` a study on an MLflow server."""
    folder = _folder(Path(path_or_name), Path(storage)) if tracking_uri is None else None
    if folder is not None:  # where it lies now: its own store is its mlflow.db (trainables.names.folder_store)
        state = folder_state(folder)
        tracking_uri, name = state.uri, state.name
    else:
        name = str(path_or_name)
    # what the runs logged (no trainable imported), artefacts read in the folder
    results = load_study(tracking_uri, name, defaults=False, folder=folder)
    if folder is None and results.study_dir:
        folder = Path(results.study_dir)
    results.study_dir = str(folder) if folder else None
    states = optuna_states(folder)
    runs = [r for r in [*results.runs, *results.failed] if r.trainable and r.trainable != BASELINE]
    chosen = {c.run_id for c in map(results.chosen, {r.part for r in runs}) if c is not None}
    configs: dict[str, dict[str, Any]] = {}
    for part in {r.part for r in runs}:  # typed per part: one part's text setting may be another's number
        configs |= _typed([r for r in runs if r.part == part])
    rows = [_trial_row(r, configs[r.run_id], states, chosen) for r in runs]
    trials = _frame(rows, ID_COLUMNS)
    if rows:  # one conversion for the column (pd.to_datetime per row was a second of a 1,000-trial study)
        trials["start_time"] = pd.to_datetime(trials["start_time"].astype("int64"), unit="ms")
    parts = {r.part for r in runs} | {p.name for p in results.parts()}
    owned = [(part, b) for part in sorted(parts) for b in results.baselines(part)]
    typed = _typed([b for _, b in owned])
    baselines = _frame([{"part": part, "baseline": b.tags.get(BASELINE_TAG, b.params.get("baseline")),
                         **typed[b.run_id], **b.metrics} for part, b in owned], ["part", "baseline"])
    return Study(name=results.name, folder=folder, tracking_uri=tracking_uri, trials=trials,
                 baselines=baselines, results=results)


def _folder(path: Path, storage: Path) -> Path:
    for folder in (path, storage / path):
        if (folder / STUDY_STATE).is_file() or (folder / MLFLOW_DB).is_file():
            return folder.resolve()
    if path.is_dir() or (storage / path).is_dir():
        raise DataError(f"not a study folder (no {STUDY_STATE} or {MLFLOW_DB})", path if path.is_dir() else storage / path)
    raise DataError(f"no study folder here, nor {storage / path}", path)


def _typed(runs: list[RunInfo]) -> dict[str, dict[str, Any]]:
    """The runs' params, each of its type, without importing a trainable (which may be a plugin of another machine,
    and is torch for the built-ins): a study logs strings as they are and everything else as JSON, so a key whose
    every value reads as JSON gets those values (ints, floats, booleans, lists), and a key with any other text (a
    string setting, even where one value looks like a number) stays text. "null" is None."""
    columns: dict[str, dict[str, Any]] = {}
    for key in sorted(set().union(*(r.params for r in runs))):
        texts = {r.run_id: r.params.get(key) for r in runs}
        try:
            columns[key] = {i: None if t in (None, "null", "None") else json.loads(t) for i, t in texts.items()}
        except json.JSONDecodeError:
            columns[key] = {i: None if t in (None, "null", "None") else t for i, t in texts.items()}
    return {r.run_id: {k: col[r.run_id] for k, col in columns.items()} for r in runs}


def _frame(rows: list[dict[str, Any]], first: list[str]) -> pd.DataFrame:
    """Rows as a DataFrame; ints stay ints where other rows leave the column empty (nullable Int64)."""
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=first)
    for col in frame.columns:
        values = [row[col] for row in rows if col in row and row[col] is not None]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            frame[col] = frame[col].astype("Int64")
    return frame


def _trial_row(run: RunInfo, config: dict[str, Any], states: dict[str, str], chosen: set[str]) -> dict[str, Any]:
    """A trial's row from what the store's run listing holds (no curve read): a finished run's last epoch is its
    final `epoch` (every report names its epoch, in order), its training time the sum of its epochs' `epoch_time_s`
    that the study tagged when it closed the run (a run closed before the tag existed: its curve, read then). A run
    that is not finished has no curves here: 0 epochs and no training time, as `history` holds none of it."""
    finished = run.status == "FINISHED"
    epochs = run.metrics.get(EPOCH) if finished else None
    if finished and epochs is None:  # a store from before every report named its epoch: its curves' last step
        epochs = max((int(steps[-1]) for steps, _ in run.history.values() if len(steps)), default=0)
    if finished and TRAIN_TIME_TAG in run.tags:
        train_s = float(run.tags[TRAIN_TIME_TAG])
    elif finished and EPOCH_TIME in run.metrics:
        train_s = float(run.history[EPOCH_TIME][1].sum())
    else:
        train_s = math.nan
    return {"part": run.part, "trial_id": run.trial_id, "run_id": run.run_id,
            "group": run.group, "state": trial_state(run, states), "chosen": run.run_id in chosen,
            **{k: v for k, v in config.items() if k not in ID_COLUMNS},
            **{k: v for k, v in sorted(run.metrics.items()) if k not in (EPOCH, EPOCH_TIME)},
            "epochs_run": int(epochs) if epochs is not None and math.isfinite(epochs) else 0,
            "train_s": train_s,
            "start_time": run.start_time}  # ms since the epoch: a datetime column once the rows are a frame
