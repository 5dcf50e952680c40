"""Where trainables come from: the built-ins, installed packages' entry points, and `module:attribute` references.

One loader for all three, so a built-in is registered exactly as a plugin is: a `Trainable` object at a
`module:attribute` address. Nothing is imported until a trainable is asked for, so listing names or checking a
study file's other keys loads no model library.

- `trainable = "NAME"` in a study file: a built-in (`BUILTINS`), else an installed package's entry point in the
  group `study.trainables` (`[project.entry-points."study.trainables"] NAME = "pkg.module:TRAINABLE"`).
- `trainable = "module:attribute"`: a module beside the study file (its folder is importable: `my_model.py`
  next to `my-study.toml` needs no install, and the folder travels to every trial: `trainables.plugin_folder`),
  or any importable module.

Everything a Trainable names is checked as it loads, each mistake one line (`PluginError`): an exception or a
`sys.exit()` while its module is imported (the file:line in the plugin's own files, and the exception), a
`report_section` that does not resolve to a function, a plugin that takes the name of a built-in or of an
installed entry point, and a study file's folder holding a module that would be imported in place of one of the
same name (`plugin_folder.problem`).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from trainables import plugin_folder
from trainables.trainable import Trainable, TrainableError

BUILTINS = {"covid": "trainables.sequence:TRAINABLE", "vae": "trainables.vae:TRAINABLE"}
ENTRY_POINT_GROUP = "study.trainables"
# The study files' folders this process has put on sys.path (`_importable`): when another study file's folder is
# checked, a module of the same name imported from one of them is an earlier plugin, not an installed module.
_FOLDERS: set[Path] = set()


class PluginError(ValueError):
    """A trainable reference that does not resolve or does not fit; `str()` is one line."""


@dataclass(frozen=True)
class Found:
    """A resolved trainable and where it came from: "built-in", "entry point (DIST)" or "file (PATH)"."""

    trainable: Trainable
    source: str
    # The module's file or package folder beside the study file (file plugins): its folder travels to every
    # trial's worker as Ray's working_dir (study.runner)
    ship: Path | None = None


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
    not resolve, is not a valid Trainable, or names something that does not resolve (see the module docstring)."""
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
        _check_section(found.trainable, ref)
        return found
    ship = local_module(ref, base_dir)
    if ship is not None:
        trouble = plugin_folder.problem(ship.parent, skip=_FOLDERS)
        if trouble:
            raise PluginError(f"{ref!r}: {trouble}")
    found = Found(_load(ref, base_dir), f"file ({ship})" if ship else "module", ship)
    _check_name(found.trainable, ref)
    _check_section(found.trainable, ref)
    return found


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
    where = f" (nor in {Path(base_dir).resolve()})" if base_dir is not None else ""
    module = _import(module_name, ref, ship.parent if ship is not None else None, where)
    if not hasattr(module, attr):
        raise PluginError(f"{ref!r}: module {module_name} has no attribute {attr!r}")
    found = getattr(module, attr)
    if not isinstance(found, Trainable):
        raise PluginError(f"{ref!r}: is a {type(found).__name__}, not a trainables.Trainable "
                          "(build it with `from trainables import Trainable`)")
    return found


def _import(module_name: str, ref: str, folder: Path | None, where: str = "", what: str = "") -> ModuleType:
    """The module, or PluginError in one line: not found, a syntax error, an invalid Trainable, or any exception
    (a `sys.exit()` too) raised while it was imported, at the file:line of the plugin's own files where it was
    raised. `what` prefixes the line (`report_section = ...: `)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise PluginError(f"{ref!r}: {what}no module named {err.name!r}{where}") from None
        raise PluginError(f"{ref!r}: {what}importing {module_name} failed: {err}") from None
    except SyntaxError as err:
        raise PluginError(f"{ref!r}: {what}{err.filename}:{err.lineno}: syntax error: {err.msg}") from None
    except TrainableError as err:  # its Trainable(...) broke the contract as the module was imported
        raise PluginError(f"{ref!r}: {what}not a valid Trainable: {err}") from None
    except (Exception, SystemExit) as err:  # the plugin's own code, at its import: said in one line, not a traceback
        root = folder if folder is not None else _module_root(module_name)
        raise PluginError(f"{ref!r}: {what}importing {module_name} failed: {raised(err, root)}") from None


def raised(err: BaseException, root: Path | None) -> str:
    """`FILE:LINE: Type: message` of an exception from a plugin's code, on one line: the innermost frame of its
    traceback in `root` (the plugin's folder or package), else the innermost one."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<")]
    inside = [f for f in frames if root is not None and _inside(f.filename, root)]
    frame = (inside or frames or [None])[-1]
    at = f"{frame.filename}:{frame.lineno}: " if frame is not None else ""
    if isinstance(err, SystemExit):
        text = f"SystemExit({err.code!r}) (sys.exit() is not for a plugin: raise an exception)"
    else:
        message = " ".join(str(err).split())
        text = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return at + text


def _inside(filename: str, root: Path) -> bool:
    path = Path(filename).resolve()
    return path == root or path.is_relative_to(root)


def _module_root(module_name: str) -> Path | None:
    """The file or package folder of a module's top-level package, where its own frames are."""
    top = module_name.split(".", 1)[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    origin = Path(spec.origin).resolve()
    return origin.parent if spec.submodule_search_locations else origin


def _check_name(trainable: Trainable, ref: str) -> None:
    """A module's Trainable may not take the name of a built-in or of an installed entry point (unless it is that
    very one): a study's runs, its Optuna study and its report know a trainable by its name."""
    name = trainable.name
    if name in BUILTINS and BUILTINS[name] != ref:
        raise PluginError(f"{ref!r}: its Trainable is named {name!r}, the name of a built-in trainable; give it "
                          "another name")
    ep = entry_points().get(name)
    if ep is not None and ep.value != ref:
        dist = ep.dist.name if ep.dist is not None else "?"
        raise PluginError(f"{ref!r}: its Trainable is named {name!r}, the name of the trainable the installed "
                          f"package {dist} registers; give it another name")


def _check_section(trainable: Trainable, ref: str) -> None:
    """A plugin's `report_section` must name a function ("module:function") that imports: the report calls it."""
    section = trainable.report_section
    if section is None:
        return
    what = f"report_section = {section!r}: "
    module_name, _, function = section.partition(":") if isinstance(section, str) else ("", "", "")
    if not module_name or not function:
        raise PluginError(f"{ref!r}: {what}expected 'module:function'")
    module = _import(module_name, ref, _module_root(module_name), what=what)
    found = getattr(module, function, None)
    if found is None:
        raise PluginError(f"{ref!r}: {what}module {module_name} has no function {function!r}")
    if not callable(found):
        raise PluginError(f"{ref!r}: {what}not a function but {type(found).__name__} {found!r:.40}")


def _importable(folder: Path, top: str) -> None:
    """Put `folder` first on sys.path, and forget a module of the same top-level name imported from elsewhere
    (two study folders may each hold a `my_model.py`; `plugin_folder.problem` has refused any other clash)."""
    folder_text = str(folder)
    if folder_text in sys.path:
        sys.path.remove(folder_text)
    sys.path.insert(0, folder_text)
    _FOLDERS.add(folder.resolve())
    loaded = sys.modules.get(top)
    where = getattr(loaded, "__file__", None)
    if loaded is not None and (where is None or Path(where).resolve().parent not in (folder, folder / top)):
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
    importlib.invalidate_caches()


__all__ = ["BUILTINS", "ENTRY_POINT_GROUP", "Found", "PluginError", "TrainableError", "find", "get", "names",
           "raised"]
