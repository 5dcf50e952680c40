"""The names a study writes and analysis reads, each defined here once: artefact files, metric names, the files
of a study folder, MLflow tags and Optuna attributes.

No torch and no models here: `study --help`, `study show` and analysis scripts import this module, and `study/`
(the writer) and `analysis/` (the reader) both need it without importing each other.
"""
from __future__ import annotations

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
BASELINE = "baseline"             # TRAINABLE_TAG of a baseline run
BASELINE_TAG = "study.baseline"   # which baseline
BASELINE_KEY_TAG = "study.baseline_key"  # the data setting a baseline run was fitted on (a hash)
KIND_TAG = "study.kind"           # parent run: what `study run` was given (a preset part, homework, a file)
PRESET_TAG = "study.preset"
STORAGE_TAG = "study.storage"     # parent run: the study folder
SPACE_TAG = "study.space."        # + part: JSON {space: {name: Optuna distribution JSON}, metric, mode, trainable}
# Keys a study adds to a trial's config that are not the trainable's own.
STUDY_KEYS = (GROUP_TAG,)
# Optuna trial user attributes
RAY_TRIAL_ATTR = "ray_trial_id"
GROUP_ATTR = GROUP_TAG
