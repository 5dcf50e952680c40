"""The contract between a model and a study: `Trainable`, what every trainable (built-in or plugin) is.

A study asks nothing else of a model: a config dataclass (every field with a default, an `epochs` field for the
budget), a `train(config, report, **context)` function that calls `report(metrics)` once per epoch, and the
objective it is chosen on. Everything else has a default a plugin may leave alone: loading the data once on the
driver, a check of the settings against the data before anything is created, an estimate of the memory a trial
needs (a config the machine cannot hold is refused before anything is created), baselines, progress columns and
a report section. Settings that cannot work together (shapes) are best refused by the config class itself (a
ValueError from `__post_init__`): a study file's constants, fixed runs and searched values all pass through it.
No torch and no Ray here: checking a study file or listing trainables loads neither.

```python
@dataclass
class Config:
    width: int = 8
    lr: float = 0.01
    epochs: int = 5

def train(config: Config, report, **context):
    for epoch in range(1, config.epochs + 1):
        report({"epoch": epoch, "val_loss": (config.lr - 0.03) ** 2 + 1 / (epoch * config.width)})

TRAINABLE = Trainable(name="toy", config=Config, train=train, metric="val_loss", mode="min")
```

`context` holds `checkpoint_dir` (write the state there before each `report` to be resumable), `resume_from`
(a folder written that way, or None), `artifact_dir` (end-of-run files, logged with the trial) and `data` (what
`load_data` returned on the driver, shared through Ray's object store; None without it).

A trainable may also say how its trial's model is saved and loaded (`model=ModelSpec(...)`): the files `train`
writes into artifact_dir (among `artifacts`, so they are logged with the trial), a `load(folder, device)` that
rebuilds the ready model from them without unpickling, and a `predict(model, inputs)` that turns a numpy array or
a DataFrame into a DataFrame, one row per input row. `open_study(DIR).model(part)`, `study predict` and the MLflow
logged model all go through it; a trainable without one still runs, it only has no usable model.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from trainables.config import check_config_class, config_from_dict, config_keys, flat_config
from trainables.names import EPOCH, RESERVED_KEYS, TEST_PREFIX

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
BUDGET = "epochs"  # the config field a study reads a trial's budget from (ASHA's max_t, the progress line)
# What torch takes beyond its import on a trial's first optimizer steps (measured ~120 MB on a CPU: torch.optim's
# lazy imports, autograd's and the kernels' first use); the built-in `memory` estimates include it.
TORCH_WORKING_BYTES = 128 << 20


class TrainableError(ValueError):
    """A Trainable that does not fit the contract; `key` is the field at fault (one line, for the study file's
    error)."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key


@dataclass(frozen=True)
class ModelSpec:
    """How a trial's model is saved and loaded: an optional part of the contract (`Trainable.model`).

    The weights are the ones the trial is scored by (its best validation epoch), written by `train` into
    artifact_dir under `files`; `load` must not run code from those files (torch.load(weights_only=True) or
    safetensors), since a study folder or tracking server is data, not code."""

    files: tuple[str, ...]                  # files `train` writes into artifact_dir that `load` needs ("model.pt",)
    load: Callable[[Path, str], Any]        # (folder holding those files, device) -> the ready model (eval mode)
    predict: Callable[[Any, Any], Any]      # (model, inputs: numpy array or DataFrame) -> DataFrame, a row per input
    describe: str = ""                      # what `predict` takes (the input's shape or columns), for error lines
    # (model, n, seed) -> n generated items as a numpy array (images: uint8 (n, 3, H, W)); None: not generative
    sample: Callable[[Any, int, int], Any] | None = None

    def __post_init__(self) -> None:
        files = self.files
        if isinstance(files, str) or not isinstance(files, (tuple, list)) or not files:
            raise TrainableError("model", f"files={files!r}: name the files train writes that load needs, "
                                          "e.g. ('model.pt',)")
        for name in files:
            if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
                raise TrainableError("model", f"files: {name!r} is not a plain file name in artifact_dir")
        if not isinstance(files, tuple):
            object.__setattr__(self, "files", tuple(files))
        for key in ("load", "predict"):
            if not callable(getattr(self, key)):
                raise TrainableError("model", f"{key}={getattr(self, key)!r} is not a function")
        if self.sample is not None and not callable(self.sample):
            raise TrainableError("model", f"sample={self.sample!r} is not a function")
        if not isinstance(self.describe, str):
            raise TrainableError("model", f"describe={self.describe!r} is not a string")


@dataclass(frozen=True)
class Trainable:
    """A model a study can tune. Required: name, config, train, metric; the rest have defaults (see module doc)."""

    name: str                                   # one name in study files, MLflow tags, Optuna and the report
    config: type                                # a dataclass, a default for every field, `epochs` among them
    train: Callable[..., Any]                   # train(config, report, **context)
    metric: str                                 # the objective, on validation: never a `test_*` metric
    mode: str = "max"                           # "max" | "min"
    artifacts: tuple[str, ...] = ()             # files `train` writes into artifact_dir (analysis reads them)
    load_data: Callable[[Any], Any] | None = None      # (config of the part's constants) -> data, on the driver
    data_hash: Callable[[Any], str] | None = None      # data -> content hash (the runs' `data_hash` tag)
    check: Callable[[Any, Any], None] | None = None    # (config, data): raise DataError if it cannot get its data
    # (config, data) -> bytes one trial of config needs at its peak beyond the interpreter and its imports (its
    # data, weights, gradients, optimizer state, a batch's activations), estimated on the high side
    memory: Callable[[Any, Any], int] | None = None
    baseline_setting: Callable[[Any], dict[str, Any] | None] | None = None  # config -> what decides a baseline
    baselines: Callable[[dict[str, Any], Any], list[dict[str, Any]]] | None = None  # (setting, data) -> rows
    progress: dict[str, str] | None = None      # metric -> column of `study run --verbose`'s table
    test_metrics: tuple[str, ...] = (TEST_PREFIX,)  # prefixes of the test numbers a summary prints
    report_section: str | None = None           # "module:function" analysis calls; None: the generic section
    description: str = ""
    model: ModelSpec | None = None              # how the trial's model is saved and loaded; None: it has none

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            raise TrainableError("name", f"{self.name!r}: use 1-64 letters, digits, '-', '_' or '.'")
        if not (isinstance(self.config, type) and dataclasses.is_dataclass(self.config)):
            raise TrainableError("config", f"{self.config!r} is not a dataclass")
        for f in dataclasses.fields(self.config):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TrainableError("config", f"field {f.name!r} of {self.config.__name__} has no default")
        try:  # every flat key once, none of the study's own, each annotation one a study file can give
            check_config_class(self.config, RESERVED_KEYS)
        except ValueError as err:
            raise TrainableError("config", str(err)) from None
        if BUDGET not in config_keys(self.config):
            raise TrainableError("config", f"{self.config.__name__} has no {BUDGET!r} field (the trial's budget)")
        if not callable(self.train):
            raise TrainableError("train", f"{self.train!r} is not a function")
        if not isinstance(self.metric, str) or not self.metric:
            raise TrainableError("metric", f"{self.metric!r}: name the reported metric to choose on")
        if self.metric.startswith(TEST_PREFIX):
            raise TrainableError("metric", f"{self.metric!r}: {TEST_PREFIX}* metrics are reported, never chosen "
                                           "on; choose on a validation metric")
        if self.mode not in ("max", "min"):
            raise TrainableError("mode", f"{self.mode!r}: expected 'max' or 'min'")
        if (self.baseline_setting is None) != (self.baselines is None):
            raise TrainableError("baselines", "give both baseline_setting and baselines, or neither")
        if self.model is not None:
            if not isinstance(self.model, ModelSpec):
                raise TrainableError("model", f"{self.model!r} is not a ModelSpec(files=..., load=..., predict=...)")
            missing = [name for name in self.model.files if name not in self.artifacts]
            if missing:  # only the declared artifacts are checked as written and logged with the trial
                raise TrainableError("model", f"files {', '.join(map(repr, missing))} are not among artifacts= "
                                              f"{self.artifacts!r} (the files a trial logs)")

    # --------------------------------------------------------------------------------------------- configs
    def make_config(self, values: dict[str, Any]) -> Any:
        """The config a trial runs with, each value converted to its field's annotation (an Enum member, a Path,
        a list, ...): unknown keys and wrong values are a ValueError naming the key."""
        try:
            return config_from_dict(self.config, dict(values))
        except TypeError as err:  # the dataclass' own constructor
            raise ValueError(str(err)) from None

    def keys(self) -> list[str]:
        return config_keys(self.config)

    def full_config(self, values: dict[str, Any]) -> dict[str, Any]:
        """Every config value a trial runs with, defaults included (flat keys), so params describe it whole: plain
        values (an Enum's value, a path's text), as MLflow params, JSON and checkpoints hold them."""
        return flat_config(self.make_config(values))

    def progress_columns(self) -> dict[str, str]:
        return self.progress or {EPOCH: EPOCH, self.metric: self.metric}

    def data_for(self, config: Any) -> tuple[Any, str]:
        """The part's data, loaded once on the driver, and its content hash ("" without data)."""
        if self.load_data is None:
            return None, ""
        data = self.load_data(config)
        return data, (self.data_hash(data) if self.data_hash else _pickle_hash(data))


def _pickle_hash(data: Any) -> str:
    """A content hash of a plugin's data when it names none: of its pickled bytes (hashed, never unpickled)."""
    import hashlib
    import pickle

    return hashlib.sha256(pickle.dumps(data, protocol=5)).hexdigest()[:16]
