"""A trial's model, ready to use: `load_model(study, part, trial=None)`, what `open_study(DIR).model(part)` and
`study predict` return.

The trial's files are those its trainable declares (`Trainable.model`, a `trainables.ModelSpec`): read where they
lie now in the study folder (a copied or moved folder loads as the original), or downloaded on demand from a
tracking server into a temporary folder that is gone once the model is loaded (model weights are not among the
artefacts `analysis.results` downloads). They are loaded by the trainable's own `load`, which reads weights only
(`torch.load(weights_only=True)` for the built-ins): nothing in a study's store runs as code. The trainable is
the run's (`trainable` tag): a built-in, an installed entry point, or a study file's `module:attribute` plugin
found where the study file was (study.json's plugin_dir), so a plugin must be importable on this machine.

What you get is a `LoadedModel`: the trainable's model object (`.model`), the trial's config, part, trial id and
run id, `predict(inputs)` through the trainable's declared `predict`, and `sample(n, seed)` where the trainable
declares one. Every other attribute is the model object's own, so `study.model("covid").latest(["Italy"])` calls
`trainables.covid_model.CovidModel.latest`.
"""
from __future__ import annotations

import json
import os
import tempfile
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from data.errors import DataError
from trainables import registry
from trainables.names import RUN_RESULTS, STUDY_FILE, STUDY_STATE
from trainables.trainable import Trainable


@dataclass
class LoadedModel:
    """A trial's model and where it came from; attributes it does not have are the model object's."""

    model: Any                  # what the trainable's ModelSpec.load returned (CovidModel, VAEModel, ...)
    config: Any                 # the trial's config (the trainable's config dataclass)
    part: str
    trial_id: str
    run_id: str
    trainable: Trainable

    def predict(self, inputs: Any) -> Any:
        """The trainable's `ModelSpec.predict`: a numpy array or DataFrame -> a DataFrame, one row per input row."""
        return self.trainable.model.predict(self.model, inputs)

    def sample(self, n: int, seed: int = 0) -> Any:
        """n generated items (images: uint8 (n, 3, S, S)); a ValueError for a trainable that declares no sampler."""
        if self.trainable.model.sample is None:
            raise ValueError(f"part {self.part}'s trainable {self.trainable.name!r} declares no sampler "
                             "(ModelSpec.sample)")
        return self.trainable.model.sample(self.model, int(n), int(seed))

    @property
    def describe(self) -> str:
        return self.trainable.model.describe

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "model":  # copy/pickle probes, and `model` before it is set
            raise AttributeError(name)
        return getattr(self.model, name)


def load_model(study: Any, part: str, trial: str | None = None, device: str = "cpu") -> LoadedModel:
    """The part's chosen trial's model (or trial `trial`, its trial id as `study show` prints it, or its MLflow run
    id) on `device`. `study`: what `analysis.open_study` returned, or a study folder or name to open. One DataError
    line when the part, the trial or its files are not there, or its trainable declares no model."""
    if isinstance(study, (str, Path)):
        from analysis.api import open_study

        study = open_study(study)
    results = study.results
    where = study.folder or study.tracking_uri
    runs = results.select(part=part)
    if trial is None:
        run = results.chosen(part)
        if run is None:
            known = sorted({r.part for r in results.runs if r.trainable and r.part}) or ["none"]
            raise DataError(f"no finished {part} trial with its objective (parts: {', '.join(known)})", where)
    else:
        run = next((r for r in runs if trial in (r.trial_id, r.run_id)), None)
        if run is None:
            ids = ", ".join(sorted(r.trial_id for r in runs)) or "none"
            raise DataError(f"no finished {part} trial {trial!r} (finished: {ids})", where)
    trainable = trainable_of(study, part, run.trainable)
    spec = trainable.model
    if spec is None:
        raise DataError(f"part {part}'s trainable {trainable.name} declares no model (Trainable.model)", where)
    config = _config(trainable, run)
    local = [run.artifacts.get(name) for name in spec.files]
    if all(p is not None and p.is_file() for p in local) and len({p.parent for p in local}) == 1:
        model = spec.load(local[0].parent, device)
    else:
        with tempfile.TemporaryDirectory(prefix="study-model-") as tmp:
            _download(study.tracking_uri, run.run_id, spec.files, Path(tmp), where, run.trial_id)
            model = spec.load(Path(tmp), device)
    return LoadedModel(model=model, config=config, part=part, trial_id=run.trial_id, run_id=run.run_id,
                       trainable=trainable)


def trainable_of(study: Any, part: str, name: str) -> Trainable:
    """The run's trainable by its name: a built-in or entry point, else the study file's `module:attribute` of that
    name, imported from the study file's folder (study.json's plugin_dir) or from the study folder."""
    try:
        return registry.get(name)
    except registry.PluginError as err:
        first = err
    folder = Path(study.folder) if study.folder else None
    if folder is not None and (folder / STUDY_FILE).is_file():
        refs = _plugin_refs(folder / STUDY_FILE)
        bases = [b for b in (_plugin_dir(folder), folder) if b is not None]
        for ref in refs:
            for base in bases:
                if registry.local_module(ref, base) is None:
                    continue
                try:
                    found = registry.find(ref, base).trainable
                except registry.PluginError as err:
                    raise DataError(f"part {part}'s trainable cannot be imported here: {err}", folder) from None
                if found.name == name:
                    return found
    raise DataError(f"part {part}'s trainable {name!r} cannot be imported here: {first}",
                    study.folder or study.tracking_uri)


def _plugin_refs(study_file: Path) -> list[str]:
    try:
        parts = tomllib.loads(study_file.read_text()).get("part", [])
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the study file ({err})", study_file) from None
    return [p["trainable"] for p in parts if isinstance(p, dict) and ":" in str(p.get("trainable", ""))]


def _plugin_dir(folder: Path) -> Path | None:
    path = folder / STUDY_STATE
    if not path.is_file():
        return None
    plugin_dir = json.loads(path.read_text()).get("plugin_dir")  # folder_state has checked the file already
    return Path(plugin_dir) if plugin_dir and Path(plugin_dir).is_dir() else None


def _config(trainable: Trainable, run: Any) -> Any:
    """The trial's config object from its logged params: a study logs strings as they are and everything else as
    JSON, so a key whose default is text stays text, and any other value is read as JSON (text where it is not)."""
    defaults = trainable.full_config({})
    values = {}
    for key in trainable.keys():
        text = run.params.get(key)
        if text is None:
            continue
        if isinstance(defaults.get(key), str):
            values[key] = text
            continue
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    try:
        return trainable.make_config(values)
    except ValueError as err:
        raise DataError(f"trial {run.trial_id}'s logged config does not fit {trainable.name}'s config: {err}") from None


def _download(tracking_uri: str, run_id: str, files: tuple[str, ...], dst: Path, where: Any, trial_id: str) -> None:
    """The model files of a run from its store (a tracking server, or a store whose artefacts are not in the
    study folder) into dst; one DataError line when the run logged none."""
    from mlflow.tracking import MlflowClient

    from analysis.store import mlflow_reader, reading

    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # no progress bars in `study predict`'s one-line output
    with reading(tracking_uri), mlflow_reader(tracking_uri) as uri, _environ(quiet):
        client = MlflowClient(tracking_uri=uri)
        logged = {Path(item.path).name for item in client.list_artifacts(run_id, RUN_RESULTS)}
        missing = [f for f in files if f not in logged]
        if missing:
            raise DataError(f"trial {trial_id} logged no {', '.join(missing)} (a trial that ended before its end of "
                            "run has no model)", where)
        for name in files:
            with tempfile.TemporaryDirectory(dir=dst) as one:  # download_artifacts may keep results/ in the path
                Path(client.download_artifacts(run_id, f"{RUN_RESULTS}/{name}", one)).replace(dst / name)


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Environment variables set for the block, the caller's own put back (a user's explicit setting is kept)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if saved[k] is None})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
