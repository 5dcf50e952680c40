"""The study file's folder, as a study imports it and sends it to every trial: the names it may not hold, what of
it travels, and how big that may be.

A trainable from a module beside the study file (`trainable = "my_model:TRAINABLE"`) is imported from that folder
in the driver, and the whole folder travels to every trial's worker as Ray's runtime-environment `working_dir`
(study.runner), so that `my_model.py` may import a `helpers.py` beside it. There the folder comes first on
sys.path, before the standard library and the installed packages: a `data.py`, `json.py` or `random.py` in it would
be imported in place of the module of that name, by the study, by Ray or by the plugin itself. So a folder holding
such a name is refused before anything is created (`problem`), and so is one whose files would be more than
SHIP_LIMIT to send (Ray uploads them to the cluster's store for every study).

What counts:
- A name is a top-level module file (`NAME.py`, `NAME.pyc`, an extension module), a package (`NAME/__init__.py`)
  or a plain folder with a name Python can import (a namespace package). A module or package clashes when NAME is
  importable without the folder: one of this framework's packages, the standard library, or any installed
  module. A plain folder clashes when it has the name of one of this framework's packages (in an editable
  install, served by an import hook after sys.path, a `data/` folder of CSV files hides the `data` package), else
  only where it would change what NAME imports: a namespace package loses to a regular one found anywhere on
  sys.path, and wins over a module that an import hook after sys.path serves.
- What travels is every file of the folder except hidden ones (`.git`, `.venv`), `__pycache__`, virtual
  environments (a folder holding `pyvenv.cfg`) and study folders (holding `study.json`, the default `studies/`
  storage among them). Ray also leaves out what the folder's `.gitignore` and `.rayignore` name.

No Ray here, no torch: checking a study file imports neither.
"""
from __future__ import annotations

import importlib.machinery
import importlib.metadata
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trainables.names import STUDY_STATE

FRAMEWORK = ("data", "trainables", "study", "analysis")  # the packages a study's driver and workers import
SHIP_LIMIT = 100 << 20  # bytes of files the study file's folder may send to every trial (Ray's default is 512 MiB)
SKIPPED = ("__pycache__",)
MARKERS = ("pyvenv.cfg", STUDY_STATE)  # a folder holding one is a virtual environment or a study's folder


@dataclass
class Shipment:
    """What of a folder travels: `size` bytes (counting stops once past the limit), `excluded` (paths relative to
    the folder, as Ray's `excludes` want them) and the size of each top-level entry."""

    folder: Path
    size: int = 0
    over: bool = False
    excluded: list[str] = field(default_factory=list)
    entries: dict[str, int] = field(default_factory=dict)


def skipped(path: Path) -> bool:
    """A path of the folder that does not travel: hidden, a cache of compiled modules, a virtual environment or a
    study's folder."""
    if path.name.startswith(".") or path.name in SKIPPED:
        return True
    return path.is_dir() and any((path / marker).is_file() for marker in MARKERS)


def shipment(folder: Path, limit: int = SHIP_LIMIT) -> Shipment:
    """Walk the folder as it would travel, following links as Ray does (each real folder once), and stop counting
    once past `limit` (a study file in a home folder must not cost a walk of the disk)."""
    out = Shipment(Path(folder))
    seen: set[Path] = set()

    def walk(path: Path, top: str) -> None:
        for child in sorted(path.iterdir()):
            if out.over:
                return
            rel = child.relative_to(out.folder).as_posix()
            if skipped(child):
                out.excluded.append(rel)
                continue
            entry = top or child.name
            if child.is_dir():
                real = child.resolve()
                if real not in seen:
                    seen.add(real)
                    walk(child, entry)
            elif child.is_file():
                size = child.stat().st_size
                out.size += size
                out.entries[entry] = out.entries.get(entry, 0) + size
                out.over = out.size > limit

    seen.add(out.folder.resolve())
    walk(out.folder, "")
    return out


def too_big(folder: Path, limit: int = SHIP_LIMIT) -> str | None:
    """One line when the folder would send more than `limit` to every trial, else None."""
    found = shipment(folder, limit)
    if not found.over:
        return None
    biggest = sorted(found.entries.items(), key=lambda kv: -kv[1])[:3]
    names = ", ".join(f"{name}{'/' if (found.folder / name).is_dir() else ''} {_mib(size)}" for name, size in biggest)
    return (f"the study file's folder {found.folder} travels to every trial and holds more than {_mib(limit)} of "
            f"files (the biggest: {names}): keep the study file and its modules in a folder of their own, and the "
            "data elsewhere (--data-dir, or a path the trainable's load_data reads)")


def candidates(folder: Path) -> list[tuple[str, Path, str]]:
    """(NAME, path, kind) of what in the folder Python could import by a top-level name: "module" (a file with a
    suffix Python imports), "package" (a folder with `__init__.py`) or "folder" (a namespace package)."""
    suffixes = sorted(importlib.machinery.all_suffixes(), key=len, reverse=True)  # `.cpython-311-...so` before `.so`
    found = []
    for path in sorted(Path(folder).iterdir()):
        if skipped(path):
            continue
        if path.is_dir():
            if path.name.isidentifier():
                found.append((path.name, path, "package" if (path / "__init__.py").is_file() else "folder"))
            continue
        suffix = next((s for s in suffixes if path.name.endswith(s)), None)
        if suffix is not None and path.name[:-len(suffix)].isidentifier():
            found.append((path.name[:-len(suffix)], path, "module"))
    return found


def importable_elsewhere(name: str, kind: str, skip: set[Path]) -> str | None:
    """What NAME imports to without the folders in `skip` on sys.path, when the folder's entry of that kind would
    hide it or be hidden by it (see the module docstring); None when nothing else has that name."""
    stdlib = name in sys.stdlib_module_names or name in sys.builtin_module_names
    label = (f"this framework's package {name}" if name in FRAMEWORK
             else f"Python's standard library module {name}" if stdlib else None)
    if label is not None and (kind != "folder" or name in FRAMEWORK):
        return label  # a framework's name, whatever the folder (its view from the driver's sys.path may differ)
    path = [p for p in sys.path if isinstance(p, str) and _resolved(p) not in skip]
    after_path = False  # an import hook after sys.path's finder: only then does a namespace package win over it
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
        else:
            find = getattr(finder, "find_spec", None)
            spec = find(name, None) if find is not None else None
        if spec is not None and not (spec.origin is None and spec.submodule_search_locations is not None):
            if kind == "folder" and not after_path:
                return None
            return label or _describe(name, spec.origin)
        after_path = after_path or finder is importlib.machinery.PathFinder
    return None


def clashes(folder: Path, skip: set[Path] = frozenset()) -> list[str]:
    """`NAME.py (what it would hide)` for every clashing entry of the folder (`skip`: folders to leave out of
    sys.path when looking elsewhere, the folder itself and earlier study files' folders among them)."""
    skip = {Path(folder).resolve(), *skip}
    out = []
    for name, path, kind in candidates(folder):
        what = importable_elsewhere(name, kind, skip)
        if what is not None:
            out.append(f"{path.name}{'/' if kind != 'module' else ''} ({what})")
    return out


def problem(folder: Path, skip: set[Path] = frozenset()) -> str | None:
    """One line saying why the folder cannot be a study's plugin folder (a clashing name, too much to send), or
    None."""
    found = clashes(folder, skip)
    if found:
        return (f"{', '.join(found)} beside the study file: the study file's folder comes first on every trial's "
                "sys.path, where a module there would be imported in place of the one of the same name; give "
                f"{'it another name' if len(found) == 1 else 'them other names'}")
    return too_big(folder)


def excludes(folder: Path, also: list[Path] = ()) -> list[str]:
    """Ray's `excludes` for the folder as `working_dir` (gitignore patterns, anchored at the folder): what
    `shipment` leaves out, and each path of `also` inside the folder (the study's own folder, made as Ray starts)."""
    folder = Path(folder).resolve()
    paths = shipment(folder, limit=sys.maxsize).excluded
    for extra in also:
        extra = Path(extra).resolve()
        if extra != folder and extra.is_relative_to(folder):
            paths.append(extra.relative_to(folder).as_posix())
    return ["/" + _escaped(p) for p in paths]


def _escaped(path: str) -> str:
    """A path as a gitignore pattern that matches only itself."""
    out = "".join("\\" + c if c in "\\*?[]" else c for c in path)
    return out[:-1] + "\\ " if out.endswith(" ") else out


def _describe(name: str, origin: str | None) -> str:
    dists = importlib.metadata.packages_distributions().get(name)
    if dists:
        return f"the installed package {dists[0]}'s module {name}"
    return f"the module {name} at {origin}" if origin else f"the module {name}"


def _resolved(entry: str) -> Path:
    return Path(entry or os.curdir).resolve()


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**20:.1f} MiB"


__all__ = ["FRAMEWORK", "SHIP_LIMIT", "Shipment", "candidates", "clashes", "excludes", "importable_elsewhere",
           "problem", "shipment", "skipped", "too_big"]
