"""docs/TRAINABLES.md works as written: its example trainable and study file, copied out of the page into a folder of
their own, are accepted by the study-file checker, train and report as the contract says (resume included), and run
as a study from another folder; its COVID example builds a Trainable with the COVID hooks; its commands parse.

The example needs no torch and no data: the study takes seconds plus a local Ray's start."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from test_readme import parses, study_commands

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "TRAINABLES.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def example_module() -> str:
    """The first ```python block that defines TRAINABLE: the example's model file."""
    return next(b for b in blocks("python") if re.search(r"^TRAINABLE = ", b, flags=re.M))


def example_study() -> str:
    """The first ```toml block: the example's study file."""
    return blocks("toml")[0]


@pytest.fixture
def example(tmp_path, monkeypatch) -> Path:
    """The example's two files in tmp_path/project, named as the doc names them; sys.path and sys.modules are
    given back afterwards (the study-file checker puts the study file's folder first and imports the module)."""
    study = example_study()
    ref = tomllib.loads(study)["part"][0]["trainable"]
    module = ref.split(":", 1)[0]
    assert f"`{module}.py`" in DOC and "`my-study.toml`" in DOC, "the doc names the files it shows"
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / f"{module}.py").write_text(example_module())
    (folder / "my-study.toml").write_text(study)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    yield folder / "my-study.toml"
    for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
        del sys.modules[name]


def load_module(path: Path, name: str, monkeypatch: pytest.MonkeyPatch):
    """The module at `path`, under a name of its own (in sys.modules while the test runs: a dataclass resolves its
    annotations through it)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_the_study_file_checker_accepts_the_example(example):
    from study import studyfile

    study = studyfile.load(example)
    (part,) = study.parts
    assert study.name == "my-study"
    assert part.plugin.name == "my-model" and part.name == "my-model"
    assert (part.metric, part.mode) == ("val_loss", "min")
    assert part.ship == (example.parent / "my_model.py").resolve()
    assert part.epochs == 4 and part.num_samples == 3 and len(part.fixed) == 1
    assert set(part.space) == {"width", "lr"}


def test_the_example_reports_once_per_epoch_and_resumes_on_its_curve(example, tmp_path, monkeypatch):
    module = load_module(example.parent / "my_model.py", "trainables_doc_example", monkeypatch)
    trainable = module.TRAINABLE
    cfg = trainable.make_config({"epochs": 4})

    whole: list[dict] = []
    last = trainable.train(cfg, whole.append, checkpoint_dir=tmp_path / "whole", resume_from=None,
                           artifact_dir=tmp_path / "artifacts", data=None)
    assert [m["epoch"] for m in whole] == [1, 2, 3, 4]
    for metrics in whole:
        assert {"epoch", trainable.metric, "epoch_" + trainable.metric, "train_loss", "test_loss"} <= set(metrics)
        assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert last == whole[-1]
    assert json.loads((tmp_path / "artifacts" / "summary.json").read_text()) == last
    assert set(trainable.artifacts) <= {p.name for p in (tmp_path / "artifacts").iterdir()}

    # Interrupted after epoch 2, then resumed from what it wrote: epochs 3 and 4 on the same curve.
    first: list[dict] = []
    trainable.train(trainable.make_config({"epochs": 2}), first.append, checkpoint_dir=tmp_path / "ckpt",
                    resume_from=None, artifact_dir=None, data=None)
    rest: list[dict] = []
    trainable.train(cfg, rest.append, checkpoint_dir=tmp_path / "ckpt2", resume_from=tmp_path / "ckpt",
                    artifact_dir=None, data=None)
    assert [m["epoch"] for m in first + rest] == [1, 2, 3, 4]
    assert first + rest == whole


def test_the_example_study_runs_from_another_folder(example, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "study", "run", str(example), "--storage", "studies"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "best val_loss" in proc.stdout and "test_loss" in proc.stdout, proc.stdout[-3000:]
    study_dir = elsewhere / "studies" / "my-study"
    assert (study_dir / "study.toml").is_file() and (study_dir / "my-model").is_dir()

    from analysis import open_study

    trials = open_study(study_dir).trials
    assert len(trials) == 4 and set(trials.part) == {"my-model"} and trials.chosen.sum() == 1


def test_the_docs_plugin_tests_pass_beside_the_example(example):
    """The page's test_my_model.py, beside the example's files, passes under pytest as a plugin author runs it:
    check_trainable in-process, then smoke_study through the real `study run`."""
    block = next(b for b in blocks("python") if b.startswith('"""test_my_model.py'))
    (example.parent / "test_my_model.py").write_text(block)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_model.py"],
                          cwd=example.parent, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert "2 passed" in proc.stdout, proc.stdout[-2000:]


def test_the_covid_example_builds_a_trainable_with_the_covid_hooks(tmp_path, monkeypatch):
    from trainables.covid_hooks import COVID_HOOKS

    code = next(b for b in blocks("python") if "COVID_HOOKS" in b and "TRAINABLE = " in b)
    path = tmp_path / "my_covid.py"
    path.write_text(code)
    trainable = load_module(path, "trainables_doc_covid_example", monkeypatch).TRAINABLE
    assert {k: getattr(trainable, k) for k in COVID_HOOKS} == COVID_HOOKS
    assert {"seq_len", "split", "date_range", "hidden", "lr", "epochs"} <= set(trainable.keys())
    assert trainable.full_config({"seq_len": 20})["seq_len"] == 20


def test_the_entry_point_snippet_names_the_group_the_registry_reads():
    from trainables.registry import ENTRY_POINT_GROUP

    pyproject = next(tomllib.loads(b) for b in blocks("toml") if "entry-points" in b)
    (group, points), = pyproject["project"]["entry-points"].items()
    assert group == ENTRY_POINT_GROUP
    assert points == {"my-model": "my_model:TRAINABLE"}


COMMANDS = study_commands(DOC)


def test_the_doc_gives_the_commands_it_describes():
    firsts = {argv[0] for argv in COMMANDS if argv}
    assert {"run", "trainables", "show", "report", "resume"} <= firsts, firsts


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_every_study_command_in_the_doc_parses(argv):
    code = parses(argv)
    assert code is None, f"`study {' '.join(argv)}` from docs/TRAINABLES.md does not parse (exit {code})"
