"""What both trainables share: seeding, device choice, checkpoints, the epoch loop's end and resume, the NaN guard."""
from __future__ import annotations

import json
import math
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

import numpy as np
import torch

# The config helpers and the names live in torch-free modules; the trainables import them from here too.
from trainables.config import NESTED, check_config_values, config_from_dict, config_keys, flat_config  # noqa: F401
from trainables.names import (BEST_EPOCH, CONFUSION, CURVE_PREFIX, EARLY_STOPPED, END_TIME, EVAL_TIME,  # noqa: F401
                              IMAGES, MODEL, PREDICTIONS, SUMMARY, curve)

Report = Callable[[dict], None]


class NonFiniteLossError(FloatingPointError):
    """Raised (never swallowed) when a loss term turns NaN/inf, so the study marks the trial FAILED."""


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


def save_model(folder: str | os.PathLike, cfg: Any, model: torch.nn.Module | dict[str, Any], **extra: Any) -> None:
    """model.pt: the config and a CPU state_dict, enough to rebuild the model (`Trainable.model`'s loader, analysis,
    scripts), plus `extra` plain values the loader needs (which rows of stacked weights are which models). `model`
    may be a module or a state_dict (a plugin keeping its best epoch's weights as one)."""
    weights = model.state_dict() if isinstance(model, torch.nn.Module) else model
    state = {k: v.detach().cpu() for k, v in weights.items()}
    _torch_save_atomic({**extra, "config": flat_config(cfg), "state_dict": state}, Path(folder) / MODEL)


def load_model_file(folder: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """What `save_model` wrote in `folder`, read without unpickling code (`load_safely`); one line when it is not
    there."""
    path = Path(folder) / MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model file")
    return load_safely(path, map_location=map_location)


def load_checkpoint(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    return load_safely(path)


# ----------------------------------------------------------------------------------------------- the epoch loop
# Both built-in fits, and any plugin that likes, run: state = resume_state(...); restore their own part of it;
# for epoch in epochs_to_run(cfg, state): train, evaluate, tracker.update, metrics; if end_epoch(...): break.
def resume_state(resume_from: str | os.PathLike | None, cfg: Any, resumable: Collection[str]) -> dict[str, Any] | None:
    """The checkpoint `end_epoch` wrote in `resume_from` (None without one), refused if its config was another.

    Why: a resumed run continues the checkpoint's curve; under another model, learning rate or data it would
    report a curve that no config produced. Only the `resumable` keys may differ (those that change no epoch
    already run: the budget, the device, patience, ...); a key the checkpoint lacks is not compared."""
    if resume_from is None:
        return None
    state = load_checkpoint(resume_from)
    saved, now = state["config"], flat_config(cfg)
    changed = sorted(k for k, v in saved.items() if k not in resumable and now.get(k) != v)
    if changed:
        diffs = ", ".join(f"{k} ({saved[k]!r}, now {now.get(k)!r})" for k in changed)
        may = f"only {', '.join(sorted(resumable))} may change on resume" if resumable else "nothing may change"
        raise ValueError(f"{resume_from}: checkpoint was written with different {diffs}; {may}")
    return state


def epochs_to_run(cfg: Any, state: dict[str, Any] | None) -> range:
    """1..cfg.epochs, or from the epoch after the checkpoint's (empty when it was the last)."""
    return range(state["epoch"] + 1 if state is not None else 1, cfg.epochs + 1)


def end_epoch(epoch: int, metrics: dict[str, Any], tracker: BestEpochs, cfg: Any, state: dict[str, Any], *,
              checkpoint_dir: str | os.PathLike | None, report: Report | None,
              before_report: Callable[[bool], dict[str, Any]] | None = None) -> bool:
    """Close an epoch in the order the contract needs: mark an early stop in `metrics`, write the checkpoint, then
    report; True when the run stops here (`tracker`'s patience ran out).

    Why one function: the study's wrapper hands `checkpoint_dir` to Tune inside `report`, so a report sent before
    its checkpoint pairs the epoch with the previous epoch's state; a run resumed from it would repeat an epoch.
    The checkpoint holds `epoch`, `metrics`, the flat `config` (what `resume_state` compares), the tracker's `best`
    and the trainable's own `state` (weights, optimizer, RNG states: tensors and plain values only, see `plain`;
    under other keys than those four).
    `before_report(stop)` returns metrics for the report (and `metrics`) but not the checkpoint: the VAE scores
    its test images with the best weights there, which must not replace the epoch's own weights in the file."""
    stop = tracker.stop(epoch)
    if stop:
        metrics[EARLY_STOPPED] = 1.0
    if checkpoint_dir is not None:
        save_checkpoint(checkpoint_dir, epoch=epoch, metrics=metrics, config=flat_config(cfg), best=tracker.state(),
                        **state)
    if before_report is not None:
        metrics.update(before_report(stop))
    if report is not None:
        report(dict(metrics))
    return stop


def write_json(folder: str | os.PathLike, name: str, obj: Any) -> None:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=plain))
