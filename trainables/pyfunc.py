"""A trial's model as an MLflow pyfunc model, without pickled code: the data folder it is saved from, and the
loader MLflow imports to load it.

MLflow's "custom flavor" route (`mlflow.pyfunc.save_model(loader_module="trainables.pyfunc", data_path=...)`):
the logged model holds only data (the files the trainable's `ModelSpec` names, and `trainable.json` naming the
trainable and its config), and `mlflow.pyfunc.load_model` imports this installed module and calls
`_load_pyfunc(data_path)`. That finds the trainable the usual way (`trainables.registry`: a built-in's name, an
installed entry point, or a `module:attribute` that must be importable where the model is loaded) and rebuilds
the model with its `ModelSpec.load`, which reads weights without unpickling. Nothing from the store is imported
or unpickled: MLflow's default pyfunc route (cloudpickle of a PythonModel) would run code from the store.

No mlflow here (MLflow imports this module, not the other way round) and no torch (the trainable's `load` does).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables import registry
from trainables.names import MODEL_INFO
from trainables.trainable import ModelSpec, Trainable


@dataclass(frozen=True)
class TrialModel:
    """What `mlflow.pyfunc.load_model(...)` wraps: a trial's ready model and where it came from.

    `predict(df)` is the trainable's `ModelSpec.predict` (a DataFrame, one row per input row); MLflow's
    `get_raw_model()` hands back this object, so `.model`, `.config` and `.sample(n, seed)` (generative models)
    are there too."""

    model: Any
    spec: ModelSpec
    trainable: str      # as recorded: a trainable's name, or module:attribute
    config: Any         # the trial's config (the trainable's dataclass)
    part: str
    trial_id: str

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        return self.spec.predict(self.model, model_input)

    def sample(self, n: int, seed: int = 0) -> Any:
        if self.spec.sample is None:
            raise ValueError(f"trainable {self.trainable!r}: its model does not sample (ModelSpec.sample is None)")
        return self.spec.sample(self.model, n, seed)

    def get_raw_model(self) -> TrialModel:
        return self


def write_data(folder: Path, artifact_dir: Path, plugin: Trainable, ref: str, part: str, trial_id: str,
               config: dict[str, Any]) -> Path:
    """Fill `folder` (the pyfunc model's data_path) with the model's files from `artifact_dir` and MODEL_INFO.

    `ref` names the trainable as the study file did (a built-in or entry point's name, or module:attribute);
    `config` is the trial's flat config (`Trainable.full_config`). A file the ModelSpec names that `train` did not
    write is the plugin's mistake: FileNotFoundError naming it (`missing_files` finds it before the trial ends)."""
    spec = _spec(plugin)
    missing = missing_files(plugin, artifact_dir)
    if missing:
        raise FileNotFoundError(f"model: train wrote no {', '.join(missing)} into artifact_dir "
                                f"(Trainable.model.files of {plugin.name!r})")
    folder.mkdir(parents=True, exist_ok=True)
    for name in spec.files:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(artifact_dir / name, target)
    info = {"trainable": ref, "name": plugin.name, "part": part, "trial_id": trial_id, "config": config}
    (folder / MODEL_INFO).write_text(json.dumps(info, indent=2, default=str))
    return folder


def missing_files(plugin: Trainable, artifact_dir: Path) -> list[str]:
    """The files of the trainable's ModelSpec that are not in `artifact_dir` ([] without a ModelSpec)."""
    if plugin.model is None:
        return []
    return [name for name in plugin.model.files if not (Path(artifact_dir) / name).is_file()]


def load(data_path: str | Path, device: str = "cpu") -> TrialModel:
    """The trial model saved in `data_path` (a folder `write_data` filled), rebuilt by its trainable's
    ModelSpec.load on `device`. The trainable must be importable here: a file plugin's folder on sys.path
    (PYTHONPATH) or its package installed."""
    folder = Path(data_path)
    info = json.loads((folder / MODEL_INFO).read_text())
    ref = info["trainable"]
    try:
        plugin = registry.find(ref).trainable
    except registry.PluginError as err:
        raise registry.PluginError(f"{folder / MODEL_INFO}: the model's trainable cannot be loaded here ({err}); "
                                   "install its package or put its folder on PYTHONPATH") from None
    spec = _spec(plugin)
    return TrialModel(model=spec.load(folder, device), spec=spec, trainable=ref,
                      config=plugin.make_config(info.get("config") or {}), part=info.get("part", ""),
                      trial_id=info.get("trial_id", ""))


def _spec(plugin: Trainable) -> ModelSpec:
    if plugin.model is None:
        raise registry.PluginError(f"trainable {plugin.name!r} declares no model (Trainable.model)")
    return plugin.model


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> TrialModel:
    """MLflow's entry point (`loader_module`): `mlflow.pyfunc.load_model(uri, model_config={"device": "cuda"})`
    puts the model on another device than the CPU."""
    return load(data_path, (model_config or {}).get("device", "cpu"))
