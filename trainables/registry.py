"""Where trainables come from: the built-ins, installed packages' entry points, and `module:attribute` references.

One loader for all three, so a built-in is registered exactly as a plugin is: a `Trainable` object at a
`module:attribute` address. Nothing is imported until a trainable is asked for, so listing names or checking a
study file's other keys loads no model library.

- `trainable = "NAME"` in a study file: a built-in (`BUILTINS`), else an installed package's entry point in the
  group `study.trainables` (`[project.entry-points."study.trainables"] NAME = "pkg.module:TRAINABLE"`).
- `trainable = "module:attribute"`: a module beside the study file (its folder is importable: `my_model.py`
  next to `my-study.toml` needs no install), or any importable module.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import sys
from dataclasses import dataclass
from pathlib import Path

from trainables.trainable import Trainable, TrainableError

BUILTINS = {"covid": "trainables.sequence:TRAINABLE", "vae": "trainables.vae:TRAINABLE"}
ENTRY_POINT_GROUP = "study.trainables"


class PluginError(ValueError):
    """A trainable reference that does not resolve or does not fit; `str()` is one line."""


@dataclass(frozen=True)
class Found:
    """A resolved trainable and where it came from: "built-in", "entry point (DIST)" or "file (PATH)"."""

    trainable: Trainable
    source: str
    ship: Path | None = None   # the module's file or package folder, for Ray's runtime environment (file plugins)


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """Every trainable name a study file may give (built-ins first)."""
    return [*BUILTINS, *(n for n in sorted(entry_points()) if n not in BUILTINS)]


def get(name: str) -> Trainable:
    """A trainable by name (a built-in or an entry point)."""
    return find(name).trainable


def find(ref: str, base_dir: str | Path | None = None) -> Found:
    """Resolve `NAME` or `module:attribute` (imported with `base_dir` importable first); PluginError if it does
    not resolve or is not a valid Trainable."""
    if not isinstance(ref, str) or not ref:
        raise PluginError(f"{ref!r}: give a trainable's name or module:attribute")
    if ":" not in ref:
        if ref in BUILTINS:
            return Found(_load(BUILTINS[ref], None), "built-in")
        eps = entry_points()
        if ref not in eps:
            raise PluginError(f"{ref!r}: no such trainable; choose from {', '.join(names())}, or give module:attribute")
        ep = eps[ref]
        dist = ep.dist.name if ep.dist is not None else "?"
        found = Found(_load(ep.value, None), f"entry point ({dist})")
        if found.trainable.name != ref:
            raise PluginError(f"{ref!r}: the entry point's Trainable is named {found.trainable.name!r}")
        return found
    ship = local_module(ref, base_dir)
    return Found(_load(ref, base_dir), f"file ({ship})" if ship else "module", ship)


def local_module(ref: str, base_dir: str | Path | None) -> Path | None:
    """The file (`top.py`) or package folder (`top/`) of the reference's top-level module inside base_dir."""
    if base_dir is None:
        return None
    top = ref.split(":", 1)[0].split(".", 1)[0]
    for path in (Path(base_dir) / f"{top}.py", Path(base_dir) / top):
        if path.is_file() or (path / "__init__.py").is_file():
            return path.resolve()
    return None


def _load(ref: str, base_dir: str | Path | None) -> Trainable:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise PluginError(f"{ref!r}: expected module:attribute")
    ship = local_module(ref, base_dir)
    if ship is not None:
        _importable(ship.parent, module_name.split(".", 1)[0])
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            where = f" (nor in {Path(base_dir).resolve()})" if base_dir is not None else ""
            raise PluginError(f"{ref!r}: no module named {err.name!r}{where}") from None
        raise PluginError(f"{ref!r}: importing {module_name} failed: {err}") from None
    except SyntaxError as err:
        raise PluginError(f"{ref!r}: {err.filename}:{err.lineno}: syntax error: {err.msg}") from None
    except TrainableError as err:  # its Trainable(...) broke the contract as the module was imported
        raise PluginError(f"{ref!r}: not a valid Trainable: {err}") from None
    if not hasattr(module, attr):
        raise PluginError(f"{ref!r}: module {module_name} has no attribute {attr!r}")
    found = getattr(module, attr)
    if not isinstance(found, Trainable):
        raise PluginError(f"{ref!r}: is a {type(found).__name__}, not a trainables.Trainable "
                          "(build it with `from trainables import Trainable`)")
    return found


def _importable(folder: Path, top: str) -> None:
    """Put `folder` first on sys.path, and forget a module of the same top-level name imported from elsewhere
    (two study folders may each hold a `my_model.py`)."""
    folder_text = str(folder)
    if folder_text in sys.path:
        sys.path.remove(folder_text)
    sys.path.insert(0, folder_text)
    loaded = sys.modules.get(top)
    where = getattr(loaded, "__file__", None)
    if loaded is not None and (where is None or Path(where).resolve().parent not in (folder, folder / top)):
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
    importlib.invalidate_caches()


__all__ = ["BUILTINS", "ENTRY_POINT_GROUP", "Found", "PluginError", "TrainableError", "find", "get", "names"]
