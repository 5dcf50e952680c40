"""What both trainables share: config parsing, seeding, device choice, checkpoints, the NaN guard."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch

C = TypeVar("C")
Report = Callable[[dict], None]


class NonFiniteLossError(FloatingPointError):
    """Raised (never swallowed) when a loss term turns NaN/inf, so the study marks the trial FAILED."""


def config_from_dict(cls: type[C], config: dict[str, Any]) -> C:
    """Build a config dataclass; unknown keys are an error naming them (a typo must not silently use a default)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**config)


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG the loop touches; return a generator for shuffling so batches don't depend on global state."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def pick_device(name: str) -> torch.device:
    """'auto' means CUDA when there is one; an explicit 'cuda' without one is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' asked for, but torch sees no CUDA device")
    return dev


def check_finite(epoch: int, **terms: torch.Tensor | float) -> None:
    """Stop at the first non-finite term, naming the epoch and the term (call once per epoch: one host sync)."""
    for name, value in terms.items():
        v = float(value)
        if not np.isfinite(v):
            raise NonFiniteLossError(f"non-finite {name} ({v}) at epoch {epoch}")


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "shuffle": gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    gen.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


CHECKPOINT_FILE = "state.pt"


def _torch_save_atomic(obj: Any, path: Path) -> None:
    """Temp file + rename, so a kill mid-save leaves the previous file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
        torch.save(obj, tmp)
    Path(tmp.name).replace(path)


def save_checkpoint(folder: str | os.PathLike, **state: Any) -> None:
    _torch_save_atomic(state, Path(folder) / CHECKPOINT_FILE)


def save_model(folder: str | os.PathLike, cfg: Any, model: torch.nn.Module) -> Path:
    """model.pt: the config and a CPU state_dict, enough to rebuild the model (analysis, scripts)."""
    path = Path(folder) / "model.pt"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _torch_save_atomic({"config": dataclasses.asdict(cfg), "state_dict": state}, path)
    return path


def load_checkpoint(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    return torch.load(path, map_location="cpu", weights_only=False)


def write_json(folder: str | os.PathLike, name: str, obj: Any) -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=_jsonable))
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
