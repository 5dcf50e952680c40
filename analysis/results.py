"""Load one study from its MLflow store into plain Python objects the figures can read without MLflow.

The layout (docs/ARCHITECTURE.md, "study/"): one experiment per study, one parent run tagged `study.kind`,
child runs tagged `trainable`/`group` with config params, per-epoch metrics (step=epoch) and artefacts under
`results/`. Everything is read once here so figure code never talks to the tracking server.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from analysis import mlflow_sqlite
from analysis.mlflow_sqlite import RawExperiment, RawRun
from analysis.store import mlflow_snapshot, probe, reading, shown, sqlite_file
from data.errors import DataError
from trainables import registry
from trainables.names import (BASELINE, BASELINE_KEY_TAG, GROUP_TAG, KIND_TAG, PARENT_TAG, PART_TAG, RUN_RESULTS,
                              SPACE_TAG, STORAGE_TAG, TRAINABLE_TAG, TRIAL_TAG, folder_artifacts, local_path)

SKIP_DOWNLOAD = (".pt", ".ckpt")  # model weights: large, and no figure needs them


@dataclass
class RunInfo:
    """One trial: its config (params, strings as logged), final metrics, tags and where its artefacts are."""

    run_id: str
    name: str
    status: str
    start_time: int  # ms since epoch; orders the search trials
    tags: dict[str, str]
    params: dict[str, str]  # the full config: logged params over the trainable's defaults
    metrics: dict[str, float]  # last logged value of each metric
    history: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # key -> (steps, values)
    artifacts: dict[str, Path] = field(default_factory=dict)  # name under results/ -> local file
    logged_params: dict[str, str] = field(default_factory=dict)  # exactly what the run logged

    @property
    def trainable(self) -> str:
        return self.tags.get(TRAINABLE_TAG, "")

    @property
    def part(self) -> str:
        """The part of the study the run belongs to (stores from before named parts: its trainable)."""
        return self.tags.get(PART_TAG) or self.trainable

    @property
    def group(self) -> str:
        return self.tags.get(GROUP_TAG, "")

    @property
    def trial_id(self) -> str:
        """The trial's name wherever a study shows one (`study show`, `open_study`, the report): its Ray trial id,
        as the study's progress and failure lines say it (the run's name, `run_trial_<id>`, is Ray's; a run
        without the tag, a baseline or an older store's, goes by its run name)."""
        return self.tags.get(TRIAL_TAG) or self.name

    def param(self, key: str, default: str | None = None) -> str | None:
        value = self.params.get(key, default)
        return default if value in (None, "None", "null") else value  # study/ logs None as JSON null

    def num(self, key: str, default: float = math.nan) -> float:
        """A param as a number (params are logged as strings); NaN when absent or not numeric."""
        try:
            return float(self.params[key])
        except (KeyError, TypeError, ValueError):
            return default


@dataclass(frozen=True)
class Part:
    """One part of a study: its name (MLflow tag `study.part`, the Optuna study's name), its trainable's name, and
    the objective it was chosen on (None in stores from before the study logged it)."""

    name: str
    trainable: str
    metric: str | None
    mode: str | None


# Params of a baseline run that are not its data setting.
BASELINE_OWN = {"baseline", "split", "trained_split"}


@dataclass
class StudyResults:
    """A whole study: the parent run's tags and every finished child run."""

    name: str
    tracking_uri: str
    experiment_id: str
    parent_tags: dict[str, str]
    runs: list[RunInfo]
    failed: list[RunInfo] = field(default_factory=list)
    data_dir: str | None = None  # overrides the runs' data_dir param (figures that need the CSV)
    study_dir: str | None = None  # the study folder (its Optuna storage); None when not on this machine
    skipped: dict[str, str] = field(default_factory=dict)  # figure name -> why it was not drawn
    # Artefacts downloaded from a tracking server without a cache folder: a temporary folder that lives as long as
    # these results (removed when they are collected, or at exit), so nothing is left behind in the temp directory.
    downloads: list[Any] = field(default_factory=list, repr=False, compare=False)
    # What the report computes once from these results and several sections use (the search's importances).
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def select(self, trainable: str | None = None, group: str | None = None, part: str | None = None,
               **params: str) -> list[RunInfo]:
        """Finished runs by tag and by exact param values (compared as strings, as logged); `part`: its trials."""
        return [r for r in self.runs if (not trainable or r.trainable == trainable) and (not group or r.group == group)
                and (not part or (r.part == part and r.trainable != BASELINE))
                and all(r.params.get(k) == str(v) for k, v in params.items())]

    def parts(self) -> list[Part]:
        """The study's parts: those whose runs exist (in start order), then those only the parent run names."""
        spaces = {k[len(SPACE_TAG):]: json.loads(v or "{}") for k, v in self.parent_tags.items() if k.startswith(SPACE_TAG)}
        names = {r.part: r.trainable for r in sorted([*self.runs, *self.failed], key=lambda r: r.start_time)
                 if r.trainable and r.trainable != BASELINE}
        names |= {n: s.get("trainable") or n for n, s in spaces.items() if n not in names}
        return [Part(n, t, spaces.get(n, {}).get("metric"), spaces.get(n, {}).get("mode")) for n, t in names.items()]

    def objective(self, part: str) -> tuple[str, str]:
        """(metric, "max"|"min") the part's trials are chosen on: as the study logged it with the part's space; a
        store from before that asks the trainable (importing it)."""
        found = next((p for p in self.parts() if p.name == part), None)
        if found is not None and found.metric and found.mode in ("max", "min"):
            return found.metric, found.mode
        trainable = found.trainable if found is not None else part
        try:
            plugin = registry.get(trainable)
        except registry.PluginError as err:
            raise DataError(f"part {part!r} has no objective logged (tag {SPACE_TAG}{part}) and its trainable cannot "
                            f"be imported here: {err}", self.tracking_uri) from None
        return plugin.metric, plugin.mode

    def chosen(self, part: str) -> RunInfo | None:
        """The part's chosen trial: the best final value of its objective among its finished runs (not the failed
        ones); the report describes it and `open_study` marks it. None before a run has the objective."""
        runs = self.select(part=part)
        if not runs:
            return None
        metric, mode = self.objective(part)
        scored = [r for r in runs if math.isfinite(r.metrics.get(metric, math.nan))]
        return (max if mode == "max" else min)(scored, key=lambda r: r.metrics[metric], default=None)

    def baselines(self, part: str) -> list[RunInfo]:
        """The part's baseline runs: tagged with it, or (stores from before named parts) untagged ones whose data
        setting is among the params its trials logged."""
        keys = set().union(*(r.params for r in self.select(part=part)))
        return [r for r in self.select(trainable=BASELINE) if r.tags.get(PART_TAG) == part
                or (PART_TAG not in r.tags and set(r.params) - BASELINE_OWN <= keys)]

    def baselines_of(self, run: RunInfo) -> list[RunInfo] | None:
        """The baseline runs fitted on `run`'s data setting; [] when none was; None when what the runs logged
        cannot tell which of the part's settings is `run`'s (never another setting's baselines).

        Generic, for any trainable: a setting's runs (one `study.baseline_key`) share their setting's params; the
        setting is `run`'s when every one of those params that `run` logged too has `run`'s value (and, where the
        rows name the split the baselines trained on, `trained_split`, it is `run`'s `split`). A setting that
        shares no param with `run` cannot be told apart, nor can two that both agree."""
        groups: dict[str, list[RunInfo]] = {}
        for b in self.baselines(run.part):
            own = {k: v for k, v in b.params.items() if k not in BASELINE_OWN}
            groups.setdefault(b.tags.get(BASELINE_KEY_TAG) or json.dumps(own, sort_keys=True), []).append(b)
        found = []
        for runs in groups.values():
            common = set.intersection(*({(k, v) for k, v in r.params.items() if k not in BASELINE_OWN} for r in runs))
            shared = [(k, v) for k, v in common if k in run.params]
            if not shared:
                return None
            trained = {r.params.get("trained_split") for r in runs} - {None}
            if all(run.params[k] == v for k, v in shared) and trained <= {run.params.get("split", "random")}:
                found.append(runs)
        return None if len(found) > 1 else (found[0] if found else [])

    def of_part(self, part: str) -> StudyResults:
        """The study as one part sees it: its trials and its baselines (a report section's input). `skipped` is
        shared, so a figure the section cannot draw is named in the whole report."""
        return dataclasses.replace(self, runs=[*self.select(part=part), *self.baselines(part)],
                                   failed=[r for r in self.failed if r.part == part])

    def skip(self, figure: str, reason: str) -> None:
        """Record why a figure is missing so the report can say so instead of silently dropping it."""
        self.skipped[figure] = reason

    def table(self):
        """Runs as a pandas DataFrame: one row per run, columns run/tags/params/final metrics."""
        import pandas as pd

        return pd.DataFrame([{"run_id": r.run_id, "name": r.name, "trainable": r.trainable, "group": r.group,
                              **{f"param.{k}": v for k, v in r.params.items()},
                              **{f"metric.{k}": v for k, v in r.metrics.items()}} for r in self.runs])


def config_defaults(trainable: str) -> dict[str, str]:
    """The trainable's config defaults, logged-style (JSON for non-strings): a run that did not log a key used these.

    study/ logs the config dict it passed, which may leave out keys the trainable filled from its defaults."""
    try:
        defaults = registry.get(trainable).full_config({})
    except registry.PluginError:  # a plugin of another machine (a file beside its study file): what it logged
        return {}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in defaults.items()}


class Lazy(MutableMapping):
    """A dict read on its first use (a run's curves, its artefacts): `study show` and `open_study(...).trials`
    need neither, and reading them is what grows with a study's trials. Once read it is a plain dict to its user
    (a script may put its own file in a run's artefacts, as it could before)."""

    def __init__(self, fill: Callable[[], dict]):
        self._fill: Callable[[], dict] | None = fill
        self._data: dict | None = None

    def _get(self) -> dict:
        if self._data is None:
            self._data, self._fill = self._fill(), None  # type: ignore[misc]
        return self._data

    def __getitem__(self, key):
        return self._get()[key]

    def __setitem__(self, key, value) -> None:
        self._get()[key] = value

    def __delitem__(self, key) -> None:
        del self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return repr(self._get()) if self._data is not None else "Lazy(not read yet)"


class _Source:
    """Where a study's runs are read from: an SQLite store's snapshot (`analysis.mlflow_sqlite`, no MLflow), or
    MLflow's client (a tracking server, a database server). Both give `RawRun`s, so the study reads the same."""

    def __init__(self, uri: str):
        self.uri = uri
        path = sqlite_file(uri)
        self.con = mlflow_snapshot(path) if path is not None else None
        self.client = None
        if self.con is None:
            probe(uri)
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=uri)

    def experiment(self, study_name: str | None) -> RawExperiment:
        """The named experiment, else the newest one that has a study parent run (skips MLflow's 'Default')."""
        where = shown(self.uri)
        if self.con is not None:
            found = mlflow_sqlite.experiments(self.con)
            if study_name:
                named = next((e for e in found if e.name == study_name), None)
                if named is None:
                    raise DataError(f"{where}: no study named {study_name!r}; the store has: "
                                    f"{', '.join(e.name for e in found) or 'none'}")
                return named
            for exp in found:
                if self.con.execute("SELECT 1 FROM tags JOIN runs USING (run_uuid) WHERE runs.experiment_id = ? "
                                    "AND tags.key = ? AND tags.value != '' LIMIT 1",
                                    (int(exp.experiment_id), KIND_TAG)).fetchone():
                    return exp
            raise DataError(f"{where}: no study in this store (no experiment with a run tagged {KIND_TAG})")
        exp = find_experiment(self.client, study_name, self.uri)
        return RawExperiment(exp.experiment_id, exp.name, exp.artifact_location)

    def runs(self, exp: RawExperiment) -> list[RawRun]:
        if self.con is not None:
            return mlflow_sqlite.runs(self.con, exp.experiment_id)
        page = self.client.search_runs([exp.experiment_id], max_results=1000)
        found = list(page)
        while page.token:
            page = self.client.search_runs([exp.experiment_id], max_results=1000, page_token=page.token)
            found.extend(page)
        return [RawRun(r.info.run_id, r.info.run_name or "", r.info.status, r.info.start_time or 0,
                       r.info.artifact_uri or "", dict(r.data.tags), dict(r.data.params), dict(r.data.metrics))
                for r in found]

    def histories(self, runs: list[RawRun]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """Every run's curves: in bulk from an SQLite store; one request per run and metric from a server."""
        if self.con is not None:
            return mlflow_sqlite.histories(self.con, [r.run_id for r in runs])
        return {r.run_id: _history(self.client, r.run_id, r.metrics.keys()) for r in runs}

    def artifacts(self, run: RawRun, cache: Callable[[], Path], place: Callable[[str], Path | None]) -> dict[str, Path]:
        """Artefacts under results/: read in place from a local folder (`place`: in the study folder where it lies
        now, when they are its own), else downloaded from the server into `cache()` (weights skipped)."""
        local = place(run.artifact_uri)
        if local is not None:
            root = local / RUN_RESULTS
            return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()} if root.is_dir() else {}
        if self.client is None:  # an SQLite store whose artefacts are not on this machine
            return {}
        found: dict[str, Path] = {}
        for item in self.client.list_artifacts(run.run_id, RUN_RESULTS):  # [] when the run has none
            if item.is_dir or item.path.endswith(SKIP_DOWNLOAD):
                continue
            dst = cache() / run.run_id
            dst.mkdir(parents=True, exist_ok=True)
            path = Path(self.client.download_artifacts(run.run_id, item.path, str(dst)))
            found[item.path.split("/", 1)[1]] = path
        return found


def _history(client, run_id: str, keys) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for key in keys:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        by_step = {m.step: m.value for m in points}  # a resumed trial may re-log a step: keep the latest value
        steps = np.array(sorted(by_step), dtype=np.int64)
        out[key] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return out


def find_experiment(client, study_name: str | None, where: str | None = None):
    """The named experiment, else the newest one that has a study parent run (skips MLflow's 'Default').
    `where`: the store as errors name it (the client may read a snapshot of it)."""
    where = shown(where or client.tracking_uri)
    if study_name:
        exp = client.get_experiment_by_name(study_name)
        if exp is None:
            names = [e.name for e in client.search_experiments()]
            raise DataError(f"{where}: no study named {study_name!r}; the store has: {', '.join(names) or 'none'}")
        return exp
    for exp in client.search_experiments(order_by=["creation_time DESC"]):
        if client.search_runs([exp.experiment_id], f"tags.`{KIND_TAG}` != ''", max_results=1):
            return exp
    raise DataError(f"{where}: no study in this store (no experiment with a run tagged {KIND_TAG})")


def load_study(tracking_uri: str, study_name: str | None = None, cache_dir: str | Path | None = None,
               defaults: bool = True, folder: str | Path | None = None) -> StudyResults:
    """Read a study (newest when no name is given): every child run's params, final metrics and tags now, in a
    number of store queries that does not grow with the trials; each run's curves (`history`, all runs' at once)
    and artefacts when first asked for.

    `defaults`: fill the config keys a run did not log (older stores) from its trainable's defaults, which imports
    the trainable (torch for the built-ins); a trainable this machine cannot import fills none.
    `folder`: the study folder where it lies now, whose artefacts are read there whatever absolute place the store
    recorded (a copied, moved or renamed folder); default: the folder the parent run names, when this machine sees it.
    `cache_dir`: where artefacts of a tracking server are downloaded (default: a temporary folder that lives as long
    as the results). The store is only read (an SQLite store through a snapshot in memory: `analysis.store`), and
    whatever breaks while reading it, now or when a curve is first read, is one DataError line."""
    with reading(tracking_uri):
        return _load(_Source(tracking_uri), study_name, cache_dir, defaults, folder)


def _load(source: _Source, study_name: str | None, cache_dir: str | Path | None, defaults: bool,
          folder: str | Path | None) -> StudyResults:
    exp = source.experiment(study_name)
    all_runs = source.runs(exp)
    parents = [r for r in all_runs if KIND_TAG in r.tags and PARENT_TAG not in r.tags]
    parents.sort(key=lambda r: r.start_time)
    parent_ids = {r.run_id for r in parents}
    parent_tags = dict(parents[-1].tags) if parents else {}
    # The study folder the parent run names (tag study.storage: where it was when the study began), and where it is
    recorded = parent_tags.get(STORAGE_TAG)
    if folder is None and recorded and Path(recorded).is_dir():
        folder = recorded
    downloads: list[Any] = []

    def cache() -> Path:
        if cache_dir:
            return Path(cache_dir)
        if not downloads:
            downloads.append(tempfile.TemporaryDirectory(prefix="study-report-"))
        return Path(downloads[0].name)

    def place(artifact_uri: str) -> Path | None:
        mapped = folder_artifacts(artifact_uri, exp.artifact_location, recorded, folder) if folder else None
        return mapped or local_path(artifact_uri)

    runs, failed, finished = [], [], []
    trainables = {r.tags.get(TRAINABLE_TAG) for r in all_runs} - {None, "", BASELINE}
    defaults = {t: config_defaults(t) for t in sorted(trainables)} if defaults else {}
    curves: list[dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]] = []

    def history(run_id: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if not curves:  # the first run whose curves are asked for reads every finished run's: one bulk read
            with reading(source.uri):
                curves.append(source.histories(finished))
        return curves[0].get(run_id, {})

    def artifacts(r: RawRun) -> Callable[[], dict[str, Path]]:
        def fill() -> dict[str, Path]:
            with reading(source.uri):
                return source.artifacts(r, cache, place)
        return fill

    for r in all_runs:
        if r.tags.get(PARENT_TAG) not in parent_ids and TRAINABLE_TAG not in r.tags:
            continue
        if r.run_id in parent_ids:
            continue
        info = RunInfo(
            run_id=r.run_id,
            name=r.name or r.run_id[:8],
            status=r.status,
            start_time=r.start_time,
            tags=r.tags,
            params={**defaults.get(r.tags.get(TRAINABLE_TAG, ""), {}), **r.params},
            metrics=r.metrics,
            logged_params=dict(r.params),
        )
        if r.status != "FINISHED":
            failed.append(info)
            continue
        info.history = Lazy(partial(history, r.run_id))
        info.artifacts = Lazy(artifacts(r))
        finished.append(r)
        runs.append(info)
    runs.sort(key=lambda r: (r.start_time, r.name))
    return StudyResults(
        name=exp.name,
        tracking_uri=source.uri,
        experiment_id=exp.experiment_id,
        parent_tags=parent_tags,
        runs=runs,
        failed=failed,
        study_dir=str(folder) if folder else None,
        downloads=downloads,
    )
