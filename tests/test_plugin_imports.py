"""A plugin can never shadow, works from any folder, and everything it names is checked as it loads.

- The study file's folder travels to every trial (Ray's working_dir), so a module beside the plugin that it imports
  (`helpers.py`) works from any working directory; a `trainables/` or `data/` folder where `study run` is started
  shadows nothing, in the driver or in a worker.
- A folder holding a module named like one the study imports (`data.py`, `json.py`, the plugin's own `random.py`),
  or more than the limit of files to send, is one line, exit 2, nothing created.
- An exception or `sys.exit()` at the plugin's import (with the file:line in the plugin), a `report_section` that
  does not resolve, a plugin named like a built-in or an installed entry point, and a `load_data` or `check` that
  raises: each one line, exit 2, nothing created.

One real study (a subprocess, its own Ray); the refusals run in this process, each plugin under a module name of
its own so that each import is fresh.
"""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.cli import main
from trainables import plugin_folder

PLUGIN = '''
"""A made-up trainable that imports a module beside it."""
from dataclasses import dataclass

import helpers
from trainables import Trainable


@dataclass
class Config:
    width: int = 8
    lr: float = 0.01
    epochs: int = 2


def train(config, report, **context):
    for epoch in range(1, config.epochs + 1):
        report({"epoch": epoch, "val_loss": helpers.loss(config.lr, config.width, epoch)})


TRAINABLE = Trainable(name="{name}", config=Config, train=train, metric="val_loss", mode="min"{extra})
'''
HELPERS = '''
def loss(lr, width, epoch):
    return (lr - 0.03) ** 2 + 1.0 / (epoch * width)
'''
STUDY = '''
[[part]]
trainable = "{module}:TRAINABLE"
num_samples = 1
fixed = [ {{ width = 4 }} ]

[part.space]
width = {{ int = [2, 16] }}
'''


def write(folder: Path, module: str, name: str = "sibling", extra: str = "", helpers: str = HELPERS,
          plugin: str = PLUGIN) -> Path:
    """A study file beside a plugin module `module` and its `helpers.py`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(plugin.replace("{name}", name).replace("{extra}", extra))
    (folder / "helpers.py").write_text(helpers)
    path = folder / "my-study.toml"
    path.write_text(STUDY.format(module=module))
    return path


def shadowing_cwd(tmp_path: Path) -> Path:
    """A working directory holding folders named like the framework's packages (namespace packages)."""
    cwd = tmp_path / "cwd"
    for name in ("trainables", "data", "analysis"):
        (cwd / name).mkdir(parents=True)
        (cwd / name / "notes.txt").write_text("not code")
    return cwd


def test_a_plugin_importing_its_sibling_runs_every_trial_from_a_working_directory_that_would_shadow(tmp_path):
    """The issue's case that runs: started from another folder, one holding `trainables/`, `data/` and
    `analysis/`; the study folder holds the plugin, the `helpers.py` it imports, a plain folder and the study's
    own storage (which does not travel)."""
    folder = tmp_path / "project"
    path = write(folder, "sibling_model")
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("a folder that is no module")
    cwd = shadowing_cwd(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "study", "run", str(path), "--storage", str(folder / "studies"),
                           "--name", "s"], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    study_dir = folder / "studies" / "s"
    client = MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id], "tags.trainable = 'sibling'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    assert all("val_loss" in r.data.metrics for r in runs)
    assert sorted(p.name for p in cwd.iterdir()) == ["analysis", "data", "trainables"]  # nothing written there
    # What Ray sent: the folder less the study's storage (the study folders are left out as it starts)
    assert "/studies/s" in plugin_folder.excludes(folder, also=[study_dir])


def refused(argv: list[str], tmp_path: Path, capsys) -> str:
    """Run `study ARGV` in this process from a folder of its own: exit 2, one line, nothing created; the line."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "studies").exists() and not (tmp_path / "cwd" / "mlruns").exists()
    return err


def run_argv(path: Path, tmp_path: Path) -> list[str]:
    return ["run", str(path), "--storage", str(tmp_path / "studies"), "--name", "s"]


def test_the_issues_folder_holding_data_json_and_trainables_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    """data.py, json.py and a trainables/ folder beside the study file, and a `helpers.py` its plugin imports,
    started from another folder that holds a `trainables/` folder: one line naming the clashes."""
    folder = tmp_path / "project"
    path = write(folder, "clash_model")
    (folder / "data.py").write_text("X = 1\n")
    (folder / "json.py").write_text("raise RuntimeError('never imported')\n")
    (folder / "trainables").mkdir()
    monkeypatch.chdir(shadowing_cwd(tmp_path))
    err = refused(run_argv(path, tmp_path), tmp_path, capsys)
    assert err.startswith(f"study: error: {path}: part 1: trainable = 'clash_model:TRAINABLE': "), err
    assert "data.py (this framework's package data)" in err and "json.py (Python's standard library" in err, err
    assert "give them other names" in err, err
    assert "clash_model" not in sys.modules  # refused before the plugin was imported


def test_a_plugin_module_named_like_a_library_module_is_refused(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "project"
    write(folder, "random")
    (folder / "my-study.toml").write_text(STUDY.format(module="random"))
    monkeypatch.chdir(tmp_path)
    err = refused(run_argv(folder / "my-study.toml", tmp_path), tmp_path, capsys)
    assert "random.py (Python's standard library module random)" in err and "give it another name" in err, err


def test_a_folder_too_big_to_send_is_refused(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "project"
    path = write(folder, "big_model")
    (folder / "weights").mkdir()
    with open(folder / "weights" / "blob.bin", "wb") as fh:  # sparse: counts as its size, costs no disk
        fh.truncate(plugin_folder.SHIP_LIMIT + 1)
    (folder / ".git").mkdir()  # hidden: never sent, never counted
    with open(folder / ".git" / "pack", "wb") as fh:
        fh.truncate(plugin_folder.SHIP_LIMIT * 2)
    monkeypatch.chdir(tmp_path)
    err = refused(run_argv(path, tmp_path), tmp_path, capsys)
    assert f"the study file's folder {folder} travels to every trial and holds more than 100 MiB" in err, err
    assert "weights/ 100 MiB" in err and ".git" not in err, err


BOOM = "import helpers\n\n\ndef crash():\n    raise RuntimeError('boom at import')\n"
CASES = [  # (case, module text, helpers text, extra Trainable args, what the line says)
    ("exception at import, in a sibling", PLUGIN, HELPERS + BOOM.replace("import helpers\n", "") + "\ncrash()\n",
     "", "helpers.py:7: RuntimeError: boom at import"),
    ("sys.exit at import", "import sys\nsys.exit(3)\n" + PLUGIN, HELPERS, "",
     "importing {module} failed: {folder}/{module}.py:2: SystemExit(3)"),
    ("report_section not a function", PLUGIN + "\nsection = 3\n", HELPERS, ', report_section="{module}:section"',
     "report_section = '{module}:section': not a function but int 3"),
    ("report_section missing", PLUGIN, HELPERS, ', report_section="{module}:sectoin"',
     "report_section = '{module}:sectoin': module {module} has no function 'sectoin'"),
    ("report_section module missing", PLUGIN, HELPERS, ', report_section="{module}_report:section"',
     "report_section = '{module}_report:section': no module named '{module}_report'"),
    ("report_section not module:function", PLUGIN, HELPERS, ', report_section="{module}.section"',
     "report_section = '{module}.section': expected 'module:function'"),
]


@pytest.mark.parametrize("case, module_text, helpers, extra, expected", CASES, ids=[c[0] for c in CASES])
def test_a_plugin_that_fails_as_it_loads_is_one_line(case, module_text, helpers, extra, expected, tmp_path, capsys,
                                                     monkeypatch):
    module = "load_" + re.sub(r"\W+", "_", case)
    folder = tmp_path / "project"
    path = write(folder, module, extra=extra.replace("{module}", module), helpers=helpers, plugin=module_text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "helpers", raising=False)
    err = refused(run_argv(path, tmp_path), tmp_path, capsys)
    assert err.startswith(f"study: error: {path}: part 1: trainable = '{module}:TRAINABLE': "), err
    assert expected.format(module=module, folder=folder) in err, err


@pytest.mark.parametrize("name", ["covid", "vae"])
def test_a_file_plugin_named_like_a_built_in_is_refused(name, tmp_path, capsys, monkeypatch):
    module = f"named_{name}"
    path = write(tmp_path / "project", module, name=name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "helpers", raising=False)
    err = refused(run_argv(path, tmp_path), tmp_path, capsys)
    assert f"its Trainable is named {name!r}, the name of a built-in trainable; give it another name" in err, err


def test_a_file_plugin_named_like_an_installed_entry_point_is_refused(tmp_path, capsys, monkeypatch):
    """An installed distribution's entry point in the group `study.trainables` (its metadata on sys.path)."""
    site = tmp_path / "site"
    info = site / "otherpkg-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: otherpkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[study.trainables]\nshared-name = otherpkg:TRAINABLE\n")
    monkeypatch.syspath_prepend(str(site))
    path = write(tmp_path / "project", "named_like_ep", name="shared-name")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "helpers", raising=False)
    err = refused(run_argv(path, tmp_path), tmp_path, capsys)
    assert "its Trainable is named 'shared-name', the name of the trainable the installed package otherpkg " \
           "registers" in err, err


HOOKS = '''
def load_data(config):
    return {"rows": 3}


def broken_load(config):
    raise RuntimeError("no such table")


def broken_check(config, data):
    return data["missing"]
'''
HOOK_CASES = [("load_data", "load_data=broken_load", "load_data raised {file}:10: RuntimeError: no such table"),
              ("check", "load_data=load_data, check=broken_check", "check raised {file}:14: KeyError: 'missing'")]


@pytest.mark.parametrize("hook, extra, expected", HOOK_CASES, ids=[c[0] for c in HOOK_CASES])
def test_a_hook_that_raises_on_the_driver_is_one_line(hook, extra, expected, tmp_path, capsys, monkeypatch):
    module = f"hook_{hook}"
    folder = tmp_path / "project"
    path = write(folder, module, extra=", " + extra, helpers=HELPERS + HOOKS,
                 plugin=PLUGIN.replace("import helpers\n", "import helpers\nfrom helpers import *\n"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "helpers", raising=False)
    err = refused(run_argv(path, tmp_path), tmp_path, capsys)
    assert err.startswith(f"study: error: {path}: part sibling: the trainable's "), err
    assert expected.format(file=folder / "helpers.py") in err, err


def test_a_plain_folder_clashes_only_where_it_would_shadow(tmp_path):
    """A namespace package loses to a regular module found on sys.path (`json/`, `tests/`), and wins only over
    one an import hook after sys.path serves (an editable install of this framework)."""
    for name in ("json", "random", "notes", "venv"):
        (tmp_path / name).mkdir()
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    assert plugin_folder.clashes(tmp_path) == []
    (tmp_path / "json.py").write_text("")
    assert plugin_folder.clashes(tmp_path) == ["json.py (Python's standard library module json)"]
    # a plain folder named like one of the framework's packages, always (in an editable install it shadows it)
    (tmp_path / "data").mkdir()
    assert "data/ (this framework's package data)" in plugin_folder.clashes(tmp_path)
