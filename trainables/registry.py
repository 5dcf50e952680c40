"""What a trainable is, and the names a study writes and analysis reads: each defined here once.

`study/` (the writer) and `analysis/` (the reader) both import this module, since neither may import the
other. A trainable's one name is the same in the CLI, study files, MLflow tags, Optuna study names, Tune
folders and the report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from trainables import sequence, vae
from trainables.common import (BEST_EPOCH, CONFUSION, CURVE_PREFIX, EARLY_STOPPED, END_TIME, EVAL_TIME,  # noqa: F401
                               IMAGES, MODEL, PREDICTIONS, SUMMARY, curve, flat_config)


@dataclass(frozen=True)
class Trainable:
    """One trainable: its config class (`from_dict`), its train function, its objective and its artefacts."""

    name: str
    config_cls: Any
    train: Callable[..., dict]
    metric: str                     # what a study chooses on (validation, never test)
    mode: str                       # "max" | "min"
    artifacts: tuple[str, ...]      # files its `train` writes into artifact_dir

    def full_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Every config value a trial runs with, defaults included (flat keys), so params describe it whole."""
        return flat_config(self.config_cls.from_dict(config))



TRAINABLES: dict[str, Trainable] = {
    "covid": Trainable("covid", sequence.SequenceConfig, sequence.train, "val_acc", "max",
                       (SUMMARY, CONFUSION, PREDICTIONS, MODEL)),
    "vae": Trainable("vae", vae.VAEConfig, vae.train, "val_neg_elbo", "min", (SUMMARY, IMAGES, MODEL)),
}


def get(name: str) -> Trainable:
    if name not in TRAINABLES:
        raise KeyError(f"unknown trainable {name!r}; choose from {', '.join(TRAINABLES)}")
    return TRAINABLES[name]


# ------------------------------------------------------------------------------ files of a study folder
STUDY_STATE = "study.json"        # what `study run` was asked, the MLflow parent run, the parts done
STUDY_FILE = "study.toml"         # the study file it ran with (a copy; `study resume` and the report read it)
OPTUNA_DB = "optuna.db"           # the Optuna studies, one per part, named after the trainable
MLFLOW_DB = "mlflow.db"           # the embedded MLflow store (unless --mlflow-uri names another)
SUMMARY_FILE = "summary.json"     # each part's summary, for scripts
ARTIFACTS = "artifacts"           # the MLflow artefact root of an embedded store
RUN_RESULTS = "results"           # a trial run's artefact folder (the trainable's `artifacts`)

# ------------------------------------------------------------------------------ MLflow tags
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "ray.trial_id"
NODE_TAG = "ray.node_id"
TRAINABLE_TAG = "trainable"       # a trainable's name, or BASELINE
GROUP_TAG = "group"               # "fixed" | "search"
DATA_HASH_TAG = "data_hash"
COMMIT_TAG = "git_commit"
ERROR_TAG = "error"
TRACEBACK_TAG = "error_traceback"
STOPPED_TAG = "stopped_early"     # why a trial ended before its last epoch
BASELINE = "baseline"             # TRAINABLE_TAG of a baseline run
BASELINE_TAG = "study.baseline"   # which baseline
KIND_TAG = "study.kind"           # parent run: what `study run` was given (covid, vae, homework, a file)
PRESET_TAG = "study.preset"
STORAGE_TAG = "study.storage"     # parent run: the study folder
SPACE_TAG = "study.space."        # + trainable: JSON {space: {name: Optuna distribution JSON}, metric, mode}
# Keys a study adds to a trial's config that are not the trainable's own.
STUDY_KEYS = (GROUP_TAG,)
# Optuna trial user attributes
RAY_TRIAL_ATTR = "ray_trial_id"
GROUP_ATTR = GROUP_TAG
