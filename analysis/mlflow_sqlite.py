"""A study's runs read straight from an MLflow SQLite store's tables, in a fixed number of queries, without MLflow.

Why: a study folder's store is an SQLite file, and reading it through MLflow costs what a large study cannot pay.
On a 1,000-trial study on 2 cores, `MlflowClient` took 1.7 s to import and open its SQLAlchemy store, `search_runs`
about 4 s to build its entities, and the curves one `get_metric_history` call per trial and metric (2,000 calls,
6.8 s). The five tables read here (`experiments`, `runs`, `tags`, `params`, `latest_metrics`, and `metrics` for
the curves) hold exactly what `search_runs` and `get_metric_history` return (MLflow's `latest_metrics` is the table
`Run.data.metrics` comes from), so one query per table gives the same runs in tens of milliseconds; the test
`tests/test_store_reading.py` holds this reading equal to MLflow's own on the same store. A tracking server (or a
database server) is read through MLflow's client (`analysis.results`), whose `search_runs` pages already make a
number of requests that does not grow with the trials.

The store is copied first (SQLite's backup API, into memory: one consistent snapshot, also of a study that is
running) and only the copy is queried, so nothing here can write, lock or migrate the store.
"""
from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RUN_COLUMNS = ("run_uuid", "name", "status", "start_time", "artifact_uri", "experiment_id", "lifecycle_stage")
# What MLflow 3's schema must have for this reading (checked once; a store without them is named in one line).
NEEDED = {"experiments": ("experiment_id", "name", "artifact_location", "lifecycle_stage", "creation_time"),
          "runs": RUN_COLUMNS, "tags": ("key", "value", "run_uuid"), "params": ("key", "value", "run_uuid"),
          "latest_metrics": ("key", "value", "step", "is_nan", "run_uuid"),
          "metrics": ("key", "value", "timestamp", "step", "is_nan", "run_uuid")}


@dataclass
class RawRun:
    """One MLflow run as `search_runs` gives it: its info, tags, params and latest metric values."""

    run_id: str
    name: str
    status: str
    start_time: int
    artifact_uri: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RawExperiment:
    experiment_id: str
    name: str
    artifact_location: str


def snapshot(con: sqlite3.Connection) -> sqlite3.Connection:
    """An in-memory copy of the store `con` reads (one consistent snapshot); its schema checked for this reading."""
    copy = sqlite3.connect(":memory:", check_same_thread=False)
    con.backup(copy)
    for table, columns in NEEDED.items():
        have = {row[1] for row in copy.execute(f"PRAGMA table_info({table})")}
        missing = [c for c in columns if c not in have]
        if missing:
            raise sqlite3.DatabaseError(f"table {table} has no column {missing[0]} (not an MLflow 3 store)")
    return copy


def experiments(con: sqlite3.Connection) -> list[RawExperiment]:
    """The active experiments, newest first (as `search_experiments(order_by=["creation_time DESC"])`)."""
    rows = con.execute("SELECT experiment_id, name, artifact_location FROM experiments "
                       "WHERE lifecycle_stage = 'active' ORDER BY creation_time DESC, experiment_id DESC")
    return [RawExperiment(str(i), n, a or "") for i, n, a in rows]


def runs(con: sqlite3.Connection, experiment_id: str) -> list[RawRun]:
    """The experiment's active runs with their tags, params and latest metrics: four queries in all."""
    found = {r[0]: RawRun(r[0], r[1] or "", r[2] or "", int(r[3] or 0), r[4] or "")
             for r in con.execute(f"SELECT {', '.join(RUN_COLUMNS[:5])} FROM runs "
                                  "WHERE experiment_id = ? AND lifecycle_stage = 'active'", (int(experiment_id),))}
    inside = "run_uuid IN (SELECT run_uuid FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'active')"
    for key, value, run in con.execute(f"SELECT key, value, run_uuid FROM tags WHERE {inside}", (int(experiment_id),)):
        found[run].tags[key] = value
    for key, value, run in con.execute(f"SELECT key, value, run_uuid FROM params WHERE {inside}",
                                       (int(experiment_id),)):
        found[run].params[key] = value
    for key, value, is_nan, run in con.execute(
            f"SELECT key, value, is_nan, run_uuid FROM latest_metrics WHERE {inside}", (int(experiment_id),)):
        found[run].metrics[key] = math.nan if is_nan else float(value)
    return list(found.values())


def histories(con: sqlite3.Connection, run_ids: list[str]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """run id -> metric -> (steps, values), one value per step (a step logged twice, as a resumed trial may: the
    later one), for every metric of the runs: one query per 500 runs."""
    points: dict[tuple[str, str], dict[int, float]] = {}
    for i in range(0, len(run_ids), 500):
        chunk = run_ids[i:i + 500]
        rows = con.execute(f"SELECT run_uuid, key, step, value, is_nan FROM metrics WHERE run_uuid IN "
                           f"({', '.join('?' * len(chunk))}) ORDER BY run_uuid, key, step, timestamp", chunk)
        for run, key, step, value, is_nan in rows:
            points.setdefault((run, key), {})[int(step)] = math.nan if is_nan else float(value)
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {r: {} for r in run_ids}
    for (run, key), by_step in points.items():
        steps = np.array(sorted(by_step), dtype=np.int64)
        out[run][key] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return out

