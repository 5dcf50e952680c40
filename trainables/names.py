"""The names a study writes and analysis reads, each defined here once: artefact files, metric names, the files
of a study folder, MLflow tags and Optuna attributes.

No torch and no models here: `study --help`, `study show` and analysis scripts import this module, and `study/`
(the writer) and `analysis/` (the reader) both need it without importing each other.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

# ------------------------------------------------------------------------------ artefacts of a trial
# File names a trainable writes into its artifact_dir (each Trainable's `artifacts` says which are its own).
SUMMARY, CONFUSION, PREDICTIONS, IMAGES, MODEL = (
    "summary.json", "confusion.json", "predictions.json", "images.npz", "model.pt")

# ------------------------------------------------------------------------------ metrics every built-in reports
# A plain name (val_acc, test_neg_elbo, ...) is the number of the weights the run is scored by: each model's at its
# best validation epoch so far, so a run's final value is what its report and the study use. The epoch's own
# value, the learning curve, is `curve(name)`.
CURVE_PREFIX = "epoch_"
EPOCH = "epoch"                      # every report's 1-based epoch (the contract of `report`)
BEST_EPOCH = "best_epoch"            # the epoch whose weights are scored (mean over the main models for covid)
EARLY_STOPPED = "stopped_by_patience"  # 1.0 in the last report of a run patience stopped: complete, not pruned
EVAL_TIME, END_TIME = "eval_time_s", "end_time_s"  # an epoch's evaluation; the end of run (summary.json)
EPOCH_TIME = "epoch_time_s"          # an epoch's training (a trainable that reports it gets `train_s`, their sum)
TEST_PREFIX = "test_"                # metrics reported, never chosen on: an objective may not start with it


def curve(name: str) -> str:
    """The per-epoch (learning-curve) name of a metric: `epoch_val_acc` beside the scored `val_acc`."""
    return CURVE_PREFIX + name


# ------------------------------------------------------------------------------ files of a study folder
STUDY_STATE = "study.json"        # what `study run` was asked, the MLflow parent run, the parts done
STUDY_FILE = "study.toml"         # the study file it ran with (a copy; `study resume` and the report read it)
OPTUNA_DB = "optuna.db"           # the Optuna studies, one per part, named after the part
MLFLOW_DB = "mlflow.db"           # the embedded MLflow store (unless --mlflow-uri names another)
SUMMARY_FILE = "summary.json"     # each part's summary, for scripts
ARTIFACTS = "artifacts"           # the MLflow artefact root of an embedded store
RUN_RESULTS = "results"           # a trial run's artefact folder (the trainable's `artifacts`)


# ------------------------------------------------------------------------------ a study folder, wherever it lies
# Nothing absolute about the folder is kept in it: study.json records neither the folder nor the embedded store
# (null), so a folder that was copied, moved or renamed is read and resumed where it lies now. What the MLflow store
# records absolutely (an experiment's artefact root, a run's artefact URI) is mapped to the folder here.


def embedded_uri(folder: str | Path) -> str:
    """The embedded MLflow store of a study folder where it lies now: `sqlite:///<folder>/mlflow.db`."""
    return f"sqlite:///{Path(folder).resolve() / MLFLOW_DB}"


def folder_store(recorded_uri: str | None, recorded_folder: str | None, folder: str | Path) -> str:
    """The MLflow store of `folder` from what its study.json records: none (null), or the embedded store of the
    folder it was written in (study.json files from before this rule kept both absolute), is the folder's own
    store where it lies now; any other URI is the user's own store, as given."""
    if not recorded_uri:
        return embedded_uri(folder)
    if recorded_folder and recorded_uri in (f"sqlite:///{Path(recorded_folder) / MLFLOW_DB}",
                                            embedded_uri(recorded_folder)):
        return embedded_uri(folder)
    return recorded_uri


def local_path(uri: str | None) -> Path | None:
    """The local path a `file:` URI (or a plain path) names; None for any other URI (a server's)."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    return Path(unquote(parsed.path))


def folder_artifacts(artifact_uri: str, location: str | None, recorded_folder: str | None,
                     folder: str | Path) -> Path | None:
    """Where a run's artefacts are in `folder`, wherever it lies now; None when they are not the folder's.

    MLflow keeps an experiment's artefact root (`location`) and each run's artefact URI absolute. A study puts the
    root in its folder (`<folder>/artifacts`, recorded where the folder was when the study began: the parent run's
    `study.storage` tag, `recorded_folder`), so a run under that root has its files at the same relative path under
    `folder`'s artifacts/. A run of any other root (a server's, ./mlruns of an older study) is not mapped."""
    root, run = local_path(location), local_path(artifact_uri)
    if root is None or run is None or not recorded_folder or root != Path(recorded_folder) / ARTIFACTS:
        return None
    try:
        return Path(folder) / ARTIFACTS / run.relative_to(root)
    except ValueError:
        return None

# ------------------------------------------------------------------------------ MLflow logged and registered models
# A finished trial of a trainable with a `Trainable.model` is an MLflow logged model of its run (a pyfunc model
# whose data folder holds the model's files and MODEL_INFO, loaded by PYFUNC_LOADER: no pickled code); each part's
# chosen trial's model is a version of the registered model `registered_model(study, part)`, aliased CHOSEN.
CHOSEN = "chosen"                         # the registry alias of a part's chosen trial's model
PYFUNC_LOADER = "trainables.pyfunc"       # the installed module MLflow imports to load one (`_load_pyfunc`)
MODEL_DATA = "trial_model"                # the pyfunc model's data folder: the ModelSpec's files and MODEL_INFO
MODEL_INFO = "trainable.json"             # in it: the trainable (name or module:attribute), part, trial and config
MODEL_ID_TAG = "model_id"                 # a registered version's tag: its logged model (the SQL registry keeps none)


def registered_model(study: str, part: str) -> str:
    """The registered model that holds a part's chosen models, one version per study run: `<study>-<part>`."""
    return f"{study}-{part}"


# ------------------------------------------------------------------------------ MLflow tags
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "ray.trial_id"
NODE_TAG = "ray.node_id"
TRAINABLE_TAG = "trainable"       # a trainable's name, or BASELINE
PART_TAG = "study.part"           # the part a trial belongs to (its name; the trainable's unless the file names it)
GROUP_TAG = "group"               # "fixed" | "search"
DATA_HASH_TAG = "data_hash"
COMMIT_TAG = "git_commit"
ERROR_TAG = "error"
TRACEBACK_TAG = "error_traceback"
STOPPED_TAG = "stopped_early"     # why a trial ended before its last epoch
TRAIN_TIME_TAG = "study.train_s"  # a closed run's summed EPOCH_TIME: `trials.train_s` without reading every curve
BASELINE = "baseline"             # TRAINABLE_TAG of a baseline run
BASELINE_TAG = "study.baseline"   # which baseline
BASELINE_KEY_TAG = "study.baseline_key"  # the data setting a baseline run was fitted on (a hash)
KIND_TAG = "study.kind"           # parent run: what `study run` was given (a preset part, homework, a file)
PRESET_TAG = "study.preset"
STORAGE_TAG = "study.storage"     # parent run: the study folder
SPACE_TAG = "study.space."        # + part: JSON {space: {name: Optuna distribution JSON}, metric, mode, trainable}
# Keys a study adds to a trial's config that are not the trainable's own.
STUDY_KEYS = (GROUP_TAG,)
# Names no config field may take (`Trainable(...)` refuses them): the keys a study adds to a trial's config, and the
# columns `open_study(...).trials` and `study show` put beside a trial's config values, which would hide a setting
# of the same name (analysis.api.ID_COLUMNS and the trial row's own columns).
RESERVED_KEYS = (*STUDY_KEYS, "part", "trial_id", "run_id", "state", "chosen", "epochs_run", "train_s", "start_time")
# Optuna trial user attributes
RAY_TRIAL_ATTR = "ray_trial_id"
GROUP_ATTR = GROUP_TAG
