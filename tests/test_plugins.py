"""Your own model in a study: a trainable from a file beside the study file, from an installed package's entry
point, and on a two-node cluster; malformed plugins are one line, exit 2, nothing created; the light commands
load neither torch nor ray; `study/` never branches on a built-in trainable's name.

The made-up trainable needs no torch and no data: each study takes seconds, so these run in every test run.
"""
from __future__ import annotations

import ast
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ray_nodes import ray_nodes
from study.cli import main
from trainables.registry import BUILTINS

ROOT = Path(__file__).resolve().parents[1]

TOY = '''
"""A made-up trainable: a few lines, no torch."""
import time
from dataclasses import dataclass

from trainables import Trainable


@dataclass
class ToyConfig:
    width: int = 8
    lr: float = 0.01
    epochs: int = 3
    pause: float = 0.0


def train(config, report, **context):
    for epoch in range(1, config.epochs + 1):
        time.sleep(config.pause)
        loss = (config.lr - 0.03) ** 2 + 1.0 / (epoch * config.width)
        report({"epoch": epoch, "val_loss": loss, "train_loss": 0.9 * loss, "test_loss": 1.1 * loss})


TRAINABLE = Trainable(name="toy", config=ToyConfig, train=train, metric="val_loss", mode="min")
'''

STUDY = '''
name = "toy-study"

[[part]]
trainable = "{ref}"
num_samples = 3
scheduler = "asha"
fixed = [ {{ width = 4, lr = 0.02 }} ]

[part.constants]
epochs = 3
{constants}

[part.space]
width = {{ int = [2, 16] }}
lr = {{ float = [0.001, 0.1], log = true }}
'''


def write_plugin(folder: Path, ref: str = "toy_model:TRAINABLE", constants: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy_model.py").write_text(TOY)
    path = folder / "toy-study.toml"
    path.write_text(STUDY.format(ref=ref, constants=constants))
    return path


def study(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`study ARGS` as a user runs it: its own process (its own local Ray), from `cwd`."""
    proc = subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"study {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc


def trial_runs(study_dir: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(study_dir.name)
    runs = client.search_runs([exp.experiment_id], "tags.trainable = 'toy'", max_results=100)
    return client, runs


def optuna_trials(study_dir: Path) -> tuple[list[str], list[dict]]:
    """The Optuna study names and each trial's params, read with sqlite (a reader that writes nothing)."""
    with sqlite3.connect(f"file:{study_dir / 'optuna.db'}?mode=ro", uri=True) as db:
        names = [n for (n,) in db.execute("SELECT study_name FROM studies")]
        params: dict[int, dict] = {}
        for trial_id, name, value in db.execute("SELECT trial_id, param_name, param_value FROM trial_params"):
            params.setdefault(trial_id, {})[name] = value
    return names, list(params.values())


def test_a_trainable_beside_its_study_file_runs_from_another_folder(tmp_path):
    path = write_plugin(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = study("run", str(path), "--storage", "studies", cwd=elsewhere)
    assert "best val_loss" in out.stdout and "test_loss" in out.stdout, out.stdout
    study_dir = elsewhere / "studies" / "toy-study"

    names, params = optuna_trials(study_dir)
    assert names == ["toy"] and len(params) == 4
    for p in params:  # Optuna stores floats (an int's index is the int itself)
        assert 2 <= p["width"] <= 16 and 0.001 <= p["lr"] <= 0.1, p

    client, runs = trial_runs(study_dir)
    assert len(runs) == 4 and {r.data.tags["study.part"] for r in runs} == {"toy"}
    for run in runs:
        assert run.info.status == "FINISHED" and {"width", "lr", "epochs", "pause"} <= set(run.data.params)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == sorted(steps) and steps[0] == 1 and len(steps) == len(set(steps)), steps

    shown = study("show", str(study_dir), cwd=elsewhere).stdout
    assert "val_loss" in shown and "toy" in shown, shown

    study("report", "--storage", "studies", "--name", "toy-study", cwd=elsewhere)
    report = (study_dir / "report" / "report.md").read_text()
    assert "toy" in report and "val_loss" in report
    assert "reported, not used to choose" in report.lower()
    figures = list((study_dir / "report" / "figures").glob("*.png"))
    assert figures, "the generic section draws at least one figure"

    from analysis import open_study

    opened = open_study(study_dir)
    rows = opened.trials[opened.trials.part == "toy"]
    assert len(rows) == 4 and rows.chosen.sum() == 1
    chosen = opened.chosen("toy")
    assert chosen["metric"] == "val_loss" and "test_loss" in chosen["test"]


def test_a_trainable_from_an_installed_entry_point_runs_by_name(tmp_path):
    """The same made-up trainable as a package with an entry point in the group `study.trainables`."""
    pkg = tmp_path / "pkg"
    (pkg / "src" / "toypkg").mkdir(parents=True)
    (pkg / "src" / "toypkg" / "__init__.py").write_text(TOY)
    (pkg / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "toypkg"
        version = "0.1"
        [project.entry-points."study.trainables"]
        toy = "toypkg:TRAINABLE"
        [tool.setuptools]
        package-dir = {"" = "src"}
        packages = ["toypkg"]
    '''))
    site = tmp_path / "site"  # installed into a folder of its own, not into the test run's environment
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(pkg)], check=True, capture_output=True, timeout=300)
    env = {"PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    listed = study("trainables", cwd=tmp_path, env=env).stdout
    assert "toy  (entry point (toypkg))  objective: min val_loss" in listed, listed
    path = tmp_path / "by-name.toml"
    path.write_text(STUDY.format(ref="toy", constants=""))
    study("run", str(path), "--storage", "studies", "--num-samples", "1", cwd=tmp_path, env=env)
    _, runs = trial_runs(tmp_path / "studies" / "toy-study")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
def test_a_trainable_from_a_file_runs_on_both_nodes_of_a_cluster(tmp_path):
    """Ray's runtime environment ships the module beside the study file to the worker node too."""
    path = write_plugin(tmp_path / "project", constants="pause = 1.5")  # trials long enough to overlap
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    with ray_nodes(env, cpus=1, workers=1, log_dir=tmp_path) as port:
        study("run", str(path), "--storage", str(tmp_path / "studies"), "--address", f"127.0.0.1:{port}",
              "--max-concurrent", "2", "--scheduler", "none", cwd=ROOT, env={"RAY_AUTH_MODE": "disabled"})
    _, runs = trial_runs(tmp_path / "studies" / "toy-study")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["ray.node_id"] for r in runs}) == 2


TOY_BAD_CONFIG = TOY.replace("config=ToyConfig", "config=dict")
TOY_NO_DEFAULT = TOY.replace("    width: int = 8", "    width: int")
TOY_TEST_METRIC = TOY.replace('metric="val_loss"', 'metric="test_loss"')
MALFORMED = [  # (case, module text or None, trainable reference, extra study-file lines, what the line says)
    ("no module", None, "nowhere:TRAINABLE", "", "no module named 'nowhere'"),
    ("no attribute", TOY, "toy_model:MISSING", "", "has no attribute 'MISSING'"),
    ("not a Trainable", TOY, "toy_model:train", "", "is a function, not a trainables.Trainable"),
    ("config not a dataclass", TOY_BAD_CONFIG, "toy_model:TRAINABLE", "", "config: <class 'dict'> is not a dataclass"),
    ("a field without default", TOY_NO_DEFAULT, "toy_model:TRAINABLE", "", "field 'width' of ToyConfig has no default"),
    ("objective test_*", TOY_TEST_METRIC, "toy_model:TRAINABLE", "", "metric: 'test_loss': test_* metrics are"),
    ("space key not a field", TOY, "toy_model:TRAINABLE", "depth = { int = [1, 3] }",
     "space.depth: not a toy setting"),
    ("constant not a field", TOY, "toy_model:TRAINABLE", "[part.constants]\ndepth = 2", None),
    ("unknown name", None, "bert", "", "'bert': no such trainable; choose from covid, vae"),
    ("a name with no attribute part", None, "toy_model:", "", "expected module:attribute"),
]


@pytest.mark.parametrize("case, module, ref, extra, expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_plugin_is_one_line_and_creates_nothing(case, module, ref, extra, expected, tmp_path, capsys,
                                                             monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    if module is not None:
        (folder / "toy_model.py").write_text(module)
    text = f'[[part]]\ntrainable = "{ref}"\nnum_samples = 1\n'
    if extra.startswith("[part.constants]"):
        text += f"{extra}\n[part.space]\nwidth = {{ int = [2, 16] }}\n"
        expected = "constants.depth: not a toy setting"
    else:
        text += f"[part.space]\nwidth = {{ int = [2, 16] }}\n{extra}\n"
    path = folder / "bad.toml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path), "--storage", str(tmp_path / "studies"), "--name", "s"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"study: error: {path}: part 1") and expected in err, err
    assert not (tmp_path / "studies").exists() and not (tmp_path / "mlruns").exists()
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == sorted(
        ["bad.toml", *(["toy_model.py"] if module is not None else [])])


def test_two_parts_of_one_trainable_need_their_own_names(tmp_path):
    from study import studyfile

    write_plugin(tmp_path)
    def part(name: str = "") -> str:
        return f'[[part]]\ntrainable = "toy_model:TRAINABLE"\n{name}num_samples = 1\n[part.space]\nwidth = {{ int = [2, 4] }}\n'

    path = tmp_path / "two.toml"
    path.write_text(part() + part('name = "toy-wide"\n'))
    assert [p.name for p in studyfile.load(path).parts] == ["toy", "toy-wide"]
    assert 'name = "toy-wide"' in studyfile.dumps(studyfile.load(path))
    path.write_text(part() + part())
    with pytest.raises(studyfile.StudyFileError, match="two parts named 'toy'"):
        studyfile.load(path)


@pytest.mark.parametrize("args", [["--help"], ["preset", "list"], ["run", "--help"], ["show", "--help"]])
def test_light_commands_load_neither_torch_nor_ray(args):
    code = textwrap.dedent(f"""
        import sys, time
        t0 = time.perf_counter()
        from study.cli import main
        try:
            main({args!r})
        except SystemExit:
            pass
        print(sorted(m for m in ("torch", "ray") if m in sys.modules), round(time.perf_counter() - t0, 2),
              file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stderr.splitlines()[-1].startswith("[] "), proc.stderr


def test_study_never_compares_with_a_builtin_trainable_name():
    """What is special about a trainable lives on its Trainable: no `== "covid"`, no dict keyed by "vae" in study/
    (the benchmark, which times the built-ins themselves, aside)."""
    found = []
    for path in sorted((ROOT / "study").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            consts = []
            if isinstance(node, ast.Compare):
                consts = [c for c in [node.left, *node.comparators] for c in ast.walk(c)]
            elif isinstance(node, ast.Dict):
                consts = [k for k in node.keys if k is not None]
            found += [f"{path.name}:{c.lineno}" for c in consts
                      if isinstance(c, ast.Constant) and c.value in BUILTINS]
    assert not found, found


def test_study_trainables_lists_builtins_and_the_study_files_own(tmp_path, capsys):
    path = write_plugin(tmp_path)
    assert main(["trainables", str(path), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["covid"]["source"] == "built-in" and rows["covid"]["metric"] == "val_acc"
    assert rows["vae"]["mode"] == "min"
    toy = rows["toy_model:TRAINABLE"]
    assert toy["source"] == f"file ({tmp_path / 'toy_model.py'})" and toy["config"] == {
        "width": 8, "lr": 0.01, "epochs": 3, "pause": 0.0}


def test_a_plugin_setting_of_the_wrong_type_is_one_line(tmp_path, capsys, monkeypatch):
    """Types are checked from the config's annotations, with or without `from __future__ import annotations`."""
    path = write_plugin(tmp_path / "project", constants='width = "wide"')
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path), "--storage", str(tmp_path / "studies")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"study: error: {path}: part 1 (toy): constants: width='wide': expected a number", err
    assert not (tmp_path / "studies").exists()
