"""What a study is: the flags `study run` was given (study.json) and the study file it runs (study.toml).

A study folder holds both, the MLflow store (`mlflow.db`, unless --mlflow-uri names another), the Optuna
storage and one Tune experiment folder per part, so `study resume DIR` takes nothing else. The study file is
written once, with the overrides (--set, --fixed, --epochs, --num-samples, --scheduler) applied: it is the
study as it runs, and `study run DIR/study.toml` runs it again. Seed and data folder stay run settings.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.errors import DataError
from study import studyfile
from data.inputs import InputError, parse_bounded, read_input
from study.checks import NAME_RULE, name_ok
from study.studyfile import Part, StudyFile
from trainables.names import STUDY_FILE, STUDY_STATE, SUMMARY_FILE, embedded_uri, folder_store


@dataclass
class StudySpec:
    """Everything `study run` was asked, plus the state that resume needs; saved as study.json."""

    target: str                            # a preset's part (covid, vae), homework (all) or the study file's path
    preset: str | None
    name: str
    study_dir: str                         # the folder where study.json lies now (saved as null: `save_spec`)
    mlflow_uri: str                        # saved as null for the folder's own store, mlflow.db
    seed: int = 0
    num_samples: int | None = None        # the flags as given (already applied to the study file)
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    scheduler: str | None = None
    max_failures: int = 0
    verbose: bool = False                  # Ray's trial table instead of the one-line progress
    address: str | None = None
    data_dir: str | None = None
    epochs: int | None = None
    extra_fixed: list[dict] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    experiment_id: str | None = None
    parent_run_id: str | None = None
    git_commit: str | None = None
    done: list[str] = field(default_factory=list)  # the parts finished (their names)
    plugin_dir: str | None = None          # the study file's folder: where its module:attribute trainables are

    def parts(self, study: StudyFile | None = None) -> list[Part]:
        """The parts as trials run them: the study file's (the folder's copy by default), with this run's seed
        added to each part's `seed` and the data folder set as `data_dir`, where the trainable has such settings."""
        study = study or studyfile.load(Path(self.study_dir) / STUDY_FILE, self.plugin_dir)
        return [dataclasses.replace(p, constants=self._run_settings(p)) for p in study.parts]

    def _run_settings(self, part: Part) -> dict[str, Any]:
        keys = set(part.plugin.keys())
        constants = dict(part.constants)
        if "seed" in keys:
            constants["seed"] = constants.get("seed", 0) + self.seed
        if "data_dir" in keys and self.data_dir:
            constants["data_dir"] = self.data_dir
        elif isinstance(constants.get("data_dir"), str) and constants["data_dir"] \
                and not Path(constants["data_dir"]).expanduser().is_absolute():
            # a study file's relative data folder is the driver's: workers run in another folder (Ray's working_dir)
            constants["data_dir"] = str(Path(constants["data_dir"]).expanduser().resolve())
        return constants


def with_overrides(study: StudyFile, spec: StudySpec) -> StudyFile:
    """The study file with the command line's overrides applied (checked by `check_settings` first)."""
    parts = []
    for part in study.parts:
        changes: dict[str, Any] = {"constants": dict(part.constants, **settings_for(part, spec.settings))}
        if spec.epochs is not None:
            changes["constants"]["epochs"] = spec.epochs
        if spec.num_samples is not None:
            changes["num_samples"] = spec.num_samples
        if spec.scheduler is not None:
            changes["scheduler"] = spec.scheduler
        if spec.extra_fixed:
            changes["fixed"] = [*part.fixed, *spec.extra_fixed]
        parts.append(dataclasses.replace(part, **changes))
    return dataclasses.replace(study, parts=parts)


def settings_for(part: Part, settings: dict[str, Any]) -> dict[str, Any]:
    """The --set values that are keys of this part's trainable config (a homework study has two trainables)."""
    names = set(part.plugin.keys())
    return {k: v for k, v in settings.items() if k in names}


def check_settings(study: StudyFile, settings: dict[str, Any], source: str) -> None:
    """Each --set key must be a config key of one of the study's trainables, and one the study does not vary
    per trial (a searched key or one a fixed run sets would silently not apply to those trials)."""
    for key in settings:
        owners = [p for p in study.parts if key in settings_for(p, {key: None})]
        if not owners:
            raise ValueError(f"--set {key}: not a setting of {', '.join(p.name for p in study.parts)}")
        for p in owners:
            if key in p.space:
                raise ValueError(f"--set {key}: {source} searches {key} for {p.name}; "
                                 "a constant would not apply to search trials")
            if any(key in run for run in p.fixed):
                raise ValueError(f"--set {key}: {source}'s fixed {p.name} runs set {key} per run")


def save_spec(spec: StudySpec) -> None:
    """Atomic write: a kill while saving must not lose the study's state.

    Nothing absolute about the folder is written: `study_dir` is null (the folder is where study.json lies) and so
    is `mlflow_uri` for the embedded store (the folder's own mlflow.db), so a folder that was copied, moved or
    renamed is read and resumed where it lies (`load_spec`). A user's own --mlflow-uri is kept as given."""
    path = Path(spec.study_dir) / STUDY_STATE
    state = dataclasses.asdict(spec)
    state["study_dir"] = None
    if spec.mlflow_uri == embedded_uri(spec.study_dir):
        state["mlflow_uri"] = None
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def load_spec(study_dir: str | Path) -> StudySpec:
    path = Path(study_dir) / STUDY_STATE
    if not path.exists():
        raise DataError(f"no {STUDY_STATE}: not a study folder (made by `study run`)", path.parent)
    try:
        spec = StudySpec(**parse_bounded(json.loads, read_input(path)))
    except (json.JSONDecodeError, TypeError, InputError) as err:
        raise DataError(f"unreadable study state ({err})", path) from None
    if not name_ok(spec.name):
        raise DataError(f"name {spec.name!r}: {NAME_RULE}", path)
    if not isinstance(spec.mlflow_uri, (str, type(None))):
        raise DataError(f"mlflow_uri {spec.mlflow_uri!r}: expected a tracking URI, or null for the folder's own store",
                        path)
    # The folder is where study.json lies now, whatever an older study.json recorded (trainables.names.folder_store)
    folder = path.parent.resolve()
    recorded = spec.study_dir if isinstance(spec.study_dir, str) else None
    spec.mlflow_uri = folder_store(spec.mlflow_uri, recorded, folder)
    spec.study_dir = str(folder)
    return spec


def load_summaries(study_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The folder's summary.json (each finished part's summary, written by the runner) by part name."""
    path = Path(study_dir) / SUMMARY_FILE
    try:
        found = parse_bounded(json.loads, read_input(path))
    except (json.JSONDecodeError, InputError) as err:
        raise DataError(f"unreadable ({err})", path) from None
    if not isinstance(found, list) or not all(isinstance(s, dict) and "trainable" in s for s in found):
        raise DataError("expected a JSON list of part summaries, each with 'trainable'", path)
    return {s.get("part", s["trainable"]): s for s in found}  # older summaries name the part by its trainable
