"""What both trainables share: config parsing, seeding, device choice, checkpoints, the NaN guard."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import json
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch

C = TypeVar("C")
# Artefact file names a trainable writes into its artifact_dir (the registry says which belong to which).
SUMMARY, CONFUSION, PREDICTIONS, IMAGES, MODEL = (
    "summary.json", "confusion.json", "predictions.json", "images.npz", "model.pt")
Report = Callable[[dict], None]

# Metric names both trainables report each epoch. A plain name (val_acc, test_neg_elbo, ...) is the number of the
# weights the run is scored by: each model's at its best validation epoch so far (`BestEpochs`), so a run's final
# value is what its report and the study use. The epoch's own value, the learning curve, is `curve(name)`.
CURVE_PREFIX = "epoch_"
BEST_EPOCH = "best_epoch"            # the epoch whose weights are scored (mean over the main models for covid)
EARLY_STOPPED = "stopped_by_patience"  # 1.0 in the last report of a run patience stopped: complete, not pruned
EVAL_TIME, END_TIME = "eval_time_s", "end_time_s"  # an epoch's evaluation; the end of run (summary.json)


def curve(name: str) -> str:
    """The per-epoch (learning-curve) name of a metric: `epoch_val_acc` beside the scored `val_acc`."""
    return CURVE_PREFIX + name


class NonFiniteLossError(FloatingPointError):
    """Raised (never swallowed) when a loss term turns NaN/inf, so the study marks the trial FAILED."""


# A config field holding another config whose keys stay flat for users: field(..., metadata=NESTED).
NESTED = {"nested": True}


def _nested(cls: type) -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(cls) if f.metadata.get("nested")}


def config_keys(cls: type) -> list[str]:
    """Every flat key a config takes: its own fields and those of its nested configs."""
    nested = _nested(cls)
    return [k for f in dataclasses.fields(cls)
            for k in (config_keys(nested[f.name]) if f.name in nested else [f.name])]


def config_from_dict(cls: type[C], config: dict[str, Any]) -> C:
    """Build a config dataclass from flat keys; unknown keys are an error naming them (a typo must not silently
    use a default). A nested config takes the keys that are its own."""
    names = config_keys(cls)
    unknown = sorted(set(config) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = dict(config)
    for name, sub in _nested(cls).items():
        own = set(config_keys(sub))
        kwargs[name] = config_from_dict(sub, {k: kwargs.pop(k) for k in list(kwargs) if k in own})
    return cls(**kwargs)


def flat_config(cfg: Any) -> dict[str, Any]:
    """A config as the flat dict `config_from_dict` takes back (what params, checkpoints and model files hold)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out |= flat_config(value) if f.metadata.get("nested") else {f.name: value}
    return out


def check_config_values(cfg: Any, limits: dict[str, tuple[float, float]], choices: dict[str, tuple]) -> None:
    """Types, choices and inclusive limits of a config dataclass (both trainables'): the first bad value is a
    ValueError naming the key, in one line, since a study checks every config in its driver before it starts.
    Whole numbers given as floats (32.0 from a JSON file) become ints."""
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"{key}={getattr(cfg, key)!r}: expected one of {', '.join(map(str, allowed))}")
    for f in dataclasses.fields(cfg):
        value, kind = getattr(cfg, f.name), str(f.type)
        if f.metadata.get("nested") or (value is None and "None" in kind):
            continue
        if kind.startswith(("int", "float")):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{f.name}={value!r}: expected a number")
            if not math.isfinite(value):
                raise ValueError(f"{f.name}={value!r}: must be finite")
            if kind.startswith("int"):
                if not float(value).is_integer():
                    raise ValueError(f"{f.name}={value!r}: expected a whole number")
                object.__setattr__(cfg, f.name, int(value))
        elif kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{f.name}={value!r}: expected true or false")
        elif kind.startswith("str") and not isinstance(value, str):
            raise ValueError(f"{f.name}={value!r}: expected a string")
    for key, (lo, hi) in limits.items():
        values = getattr(cfg, key, None)
        for value in (values if isinstance(values, tuple) else [values]):
            if value is not None and not lo <= value <= hi:
                raise ValueError(f"{key}={values!r}: outside the limits [{lo:g}, {hi:g}]")


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG the loop touches; return a generator for shuffling so batches don't depend on global state."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def start_fit(cfg: Any) -> torch.device:
    """A fit's process settings (torch's CPU threads when `num_threads` > 0, `keep_freed_memory`) and its device:
    'auto' means CUDA when there is one; an explicit 'cuda' without one is an error, not a silent CPU run."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    keep_freed_memory()
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' asked for, but torch sees no CUDA device")
    return dev


def keep_freed_memory() -> bool:
    """Let glibc reuse freed memory instead of returning it to the OS after every step; True if it was set.

    Why: a training step allocates megabytes of activations and frees them; by default glibc hands blocks of a few
    MiB back to the OS (mmap / heap trim), so the next step page-faults them in again, zeroed. Measured on a 2-core
    CPU, K=6 stacked GRUs: ~200,000 page faults and 0.5 s of system time per epoch, 28% of it, gone with this.
    A process-wide setting like torch.set_num_threads (trial workers and `study bench` call it); a no-op where
    the C library is not glibc."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    # Allocations from 64 MiB up come from mmap, and up to 256 MiB of freed heap stays in the process.
    return bool(libc.mallopt(m_mmap_threshold, 64 << 20)) and bool(libc.mallopt(m_trim_threshold, 256 << 20))


@dataclass
class BestEpochs:
    """Each of K models' best validation epoch so far: one mechanism for both trainables, deciding which weights
    are scored (test numbers, map, confusion matrix, images, model.pt) and when a run stops early.

    A model improves when its validation value beats its best by more than `min_delta`; ties keep the earlier,
    simpler epoch. With `patience` > 0 a run stops once no model has improved for `patience` epochs (0: never),
    since later epochs could then only change weights that are not scored."""

    mode: str                    # "max" | "min"
    k: int = 1
    patience: int = 0
    min_delta: float = 0.0
    best: np.ndarray = field(default=None)   # type: ignore[assignment]
    epoch: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.best is None:
            self.best = np.full(self.k, -math.inf if self.mode == "max" else math.inf)
        if self.epoch is None:
            self.epoch = np.zeros(self.k, dtype=np.int64)
        self.best, self.epoch = np.asarray(self.best, dtype=float), np.asarray(self.epoch, dtype=np.int64)

    def update(self, epoch: int, values: Any) -> np.ndarray:
        """Record epoch's validation values (K,); returns which models improved (their weights are now scored)."""
        values = np.asarray(values, dtype=float).reshape(self.k)
        gain = values - self.best if self.mode == "max" else self.best - values
        improved = np.nan_to_num(gain, nan=-math.inf) > self.min_delta
        self.best = np.where(improved, values, self.best)
        self.epoch = np.where(improved, epoch, self.epoch)
        return improved

    def stop(self, epoch: int) -> bool:
        return self.patience > 0 and epoch - int(self.epoch.max()) >= self.patience

    def state(self) -> dict[str, list]:
        return {"best": self.best.tolist(), "epoch": self.epoch.tolist()}


def check_finite(epoch: int, **terms: torch.Tensor | float) -> None:
    """Stop at the first non-finite term, naming the epoch and the term (call once per epoch: one host sync)."""
    for name, value in terms.items():
        v = float(value)
        if not np.isfinite(v):
            raise NonFiniteLossError(f"non-finite {name} ({v}) at epoch {epoch}")


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Every RNG's state as tensors and plain Python values, so a checkpoint loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),  # (version, tuple of ints, float | None)
        "numpy": [str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "shuffle": gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    gen.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


CHECKPOINT_FILE = "state.pt"


def plain(value: Any, where: str = "state") -> Any:
    """`value` as tensors and plain Python values only: what ``torch.load(..., weights_only=True)`` accepts.

    A checkpoint or model file in a study folder is read back at resume or by the report; loading it must not
    run code, so nothing in it may need the full unpickler. numpy scalars and arrays become Python numbers and
    lists, paths become strings; anything else is refused here, at save time, naming where it sits."""
    if isinstance(value, np.generic):  # before the Python types: np.float64 is a float subclass
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor, torch.dtype, torch.device)):
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {k: plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"{where}: a {type(value).__name__} cannot be saved for a weights_only load; "
                    "store tensors and plain values")


def _torch_save_atomic(obj: Any, path: Path) -> None:
    """Temp file + rename, so a kill mid-save leaves the previous file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
        torch.save(plain(obj), tmp)
    Path(tmp.name).replace(path)


def load_safely(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: a file holding anything but tensors and plain values is refused
    (a crafted pickle would otherwise run its code on load), with one line naming the file."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if "Unsupported" in line or "GLOBAL" in line]
        why = lines[0].split(" was not an allowed global")[0] if lines else type(err).__name__
        raise ValueError(f"{path}: refused to load: it holds more than tensors and plain values ({why})") from None


def save_checkpoint(folder: str | os.PathLike, **state: Any) -> None:
    _torch_save_atomic(state, Path(folder) / CHECKPOINT_FILE)


def save_model(folder: str | os.PathLike, cfg: Any, model: torch.nn.Module) -> None:
    """model.pt: the config and a CPU state_dict, enough to rebuild the model (analysis, scripts)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _torch_save_atomic({"config": flat_config(cfg), "state_dict": state}, Path(folder) / MODEL)


def load_checkpoint(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    return load_safely(path)


def write_json(folder: str | os.PathLike, name: str, obj: Any) -> None:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=plain))
