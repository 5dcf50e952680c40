"""A study folder is one unit, and reading never writes.

Everything in a study folder is found relative to where it lies now: copied, moved or renamed, `show`, `export`,
`report`, `open_study` and `resume` work on it there, and `resume` of a copy never touches the original (every
file of the original is hashed before and after). Reading opens the stores read-only: a missing, empty, foreign or
corrupted study.json, mlflow.db or optuna.db is one line and exit 2 (`open_study`: DataError), nothing is created,
a tracking server that does not answer costs seconds, and nothing is left in the temp directory.

The made-up trainable of test_plugins (here writing an end-of-run file, so artefacts are checked too) needs no
torch and no data: the three studies below take seconds each.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.errors import DataError
from study.cli import main
from test_plugins import STUDY

ROOT = Path(__file__).resolve().parents[1]
NAME = "done"
# test_plugins' toy trainable, with what the built-ins write too: a checkpoint each epoch (a resumed trial goes on
# from it) and an end-of-run file (an artefact under results/)
TOY_FILES = '''
import json
import pathlib
import time
from dataclasses import dataclass

from trainables import Trainable


@dataclass
class ToyConfig:
    width: int = 8
    lr: float = 0.01
    epochs: int = 3
    pause: float = 0.0


def train(config, report, checkpoint_dir=None, resume_from=None, artifact_dir=None, **context):
    start = int((pathlib.Path(resume_from) / "state.txt").read_text()) + 1 if resume_from else 1
    for epoch in range(start, config.epochs + 1):
        time.sleep(config.pause)
        loss = (config.lr - 0.03) ** 2 + 1.0 / (epoch * config.width)
        if checkpoint_dir is not None:
            pathlib.Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
            (pathlib.Path(checkpoint_dir) / "state.txt").write_text(str(epoch))
        report({"epoch": epoch, "val_loss": loss, "train_loss": 0.9 * loss, "test_loss": 1.1 * loss})
    if artifact_dir is not None:
        pathlib.Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(artifact_dir) / "summary.json").write_text(json.dumps({"width": config.width, "end_time_s": 0.0}))


TRAINABLE = Trainable(name="toy", config=ToyConfig, train=train, metric="val_loss", mode="min")
'''


def project(folder: Path, constants: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy_model.py").write_text(TOY_FILES)
    path = folder / "toy-study.toml"
    path.write_text(STUDY.format(ref="toy_model:TRAINABLE", constants=constants))
    return path


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def digest(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file (its bytes) and folder under `folder`, but the top-level entries in `skip`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(folder.rglob("*")) if p.relative_to(folder).parts[0] not in skip}


def rows(db: Path, sql: str) -> list[tuple]:
    """Read an SQLite file without writing it."""
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as con:
        return con.execute(sql).fetchall()


def toy_runs(folder: Path, db: Path | None = None) -> list[tuple]:
    """(run id, status, artefact URI, stopped_early tag) of the toy trials in the folder's store."""
    return rows(db or folder / "mlflow.db",
                "SELECT r.run_uuid, r.status, r.artifact_uri, (SELECT value FROM tags s WHERE s.run_uuid = r.run_uuid "
                "AND s.key = 'stopped_early') FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = 'trainable' AND t.value = 'toy'")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished study of the toy trainable: STORAGE/done."""
    base = tmp_path_factory.mktemp("finished")
    ok(cli("run", str(project(base / "project")), "--storage", str(base / "studies"), "--name", NAME, cwd=base))
    return base / "studies" / NAME


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A study stopped by a Ctrl-C after its first trial's first epoch (one trial at a time, slow epochs), so some
    trials were never created: a resume creates them."""
    base = tmp_path_factory.mktemp("interrupted")
    folder = base / "studies" / NAME
    with open(base / "run.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "study", "run", str(project(base / "project", "pause = 1.0")),
                                 "--storage", str(base / "studies"), "--name", NAME, "--max-concurrent", "1"],
                                cwd=base, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        while time.time() < deadline and not any(p.read_text().strip() for p in folder.glob("toy/*/result.json")):
            assert proc.poll() is None, (base / "run.log").read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, (base / "run.log").read_text()[-3000:]
    said = (base / "run.log").read_text()  # the study's own way on, not Tune's (study.console)
    assert "continue with: study resume" in said and "Tuner.restore" not in said, said[-3000:]
    states = [s for (s,) in rows(folder / "optuna.db", "SELECT state FROM trials")]
    assert len(states) < 4 and "RUNNING" in states, states  # a resume has trials to finish and to create
    return folder


# A script run with its own TMPDIR: every reading command and open_study on FOLDER (the report last).
READ = '''
import json, sys
from study.cli import main
from analysis import open_study
folder, out = sys.argv[1], sys.argv[2]
codes = [main(["show", folder]), main(["show", folder, "--json"]), main(["show", folder, "--profile"]),
         main(["export", folder, "--to", out])]
study = open_study(folder)
files = sorted(str(p) for r in study.results.runs for p in r.artifacts.values())
codes.append(main(["report", "--storage", str(study.folder.parent), "--name", study.folder.name]))
print("RESULT " + json.dumps({"codes": codes, "trials": len(study.trials), "name": study.name, "files": files}))
'''


@pytest.mark.parametrize("how", ["copy", "move", "rename"])
def test_every_reading_command_works_where_the_folder_lies(how, finished, tmp_path):
    original = tmp_path / "studies" / NAME
    shutil.copytree(finished, original, symlinks=True)
    if how == "copy":
        folder = tmp_path / "elsewhere" / NAME
        shutil.copytree(original, folder, symlinks=True)
    elif how == "move":
        folder = tmp_path / "elsewhere" / "deeper" / NAME
        folder.parent.mkdir(parents=True)
        shutil.move(original, folder)
    else:
        folder = original.rename(original.parent / "renamed")
    watched = original if how == "copy" else folder
    before = digest(watched)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "cwd").mkdir()
    proc = ok(subprocess.run([sys.executable, "-c", READ, str(folder), str(tmp_path / "out")], cwd=tmp_path / "cwd",
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "TMPDIR": str(tmp_path / "tmp"), "PYTHONPATH": str(ROOT)}))
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["codes"] == [0] * 5 and result["trials"] == 4 and result["name"] == NAME, proc.stdout[-3000:]
    # the end-of-run files are read in the folder where it lies, not where the store recorded them
    assert result["files"] and all(f.startswith(str(folder / "artifacts")) for f in result["files"]), result["files"]
    assert "toy: 3 complete, 1 pruned" in proc.stdout or "toy: 4 complete" in proc.stdout, proc.stdout[-3000:]
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"trials.csv", "history.csv", "baselines.csv"}
    assert (folder / "report" / "index.html").is_file()
    assert list((tmp_path / "tmp").iterdir()) == []  # no snapshot, no downloads left in the temp directory
    assert list((tmp_path / "cwd").iterdir()) == []  # no ./mlruns, no store
    assert digest(watched, skip=("report",) if how != "copy" else ()) == before  # reading wrote nothing
    if how != "copy":
        assert not original.exists()  # nothing recreated where the folder was


def test_resume_of_a_finished_copy_never_touches_the_original(finished, tmp_path):
    copy = tmp_path / "copy" / "again"
    shutil.copytree(finished, copy, symlinks=True)
    before = digest(finished)
    done = ok(cli("resume", str(copy), cwd=tmp_path))
    out = done.stdout
    assert f"study: {NAME} in {copy}" in out and "toy already finished" in out, out[-3000:]
    assert "study: done." in out and f"--name {copy.name}" in out  # the report's hint names the folder as it lies
    assert "Started a local Ray instance" not in done.stderr  # nothing left to run: no Ray
    assert digest(finished) == before
    assert json.loads((copy / "study.json").read_text())["mlflow_uri"] is None  # the folder's own store


def test_a_resume_counts_the_errored_trials_of_parts_finished_before(finished, tmp_path):
    """The parts an earlier driver finished are in the resumed study's last line, exit status and summary.json:
    here the copy's summary.json records an errored trial of its finished part, as that driver wrote it."""
    copy = tmp_path / NAME
    shutil.copytree(finished, copy, symlinks=True)
    summaries = json.loads((copy / "summary.json").read_text())
    summaries[0]["errored"] = 1
    (copy / "summary.json").write_text(json.dumps(summaries))
    resumed = cli("resume", str(copy), cwd=tmp_path)
    assert resumed.returncode == 1, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials = summaries[0]["trials"]
    assert f"study: finished with 1 of {trials} trials errored (toy 1/{trials})" in resumed.stdout, resumed.stdout
    assert json.loads((copy / "summary.json").read_text()) == summaries


def test_resume_of_an_interrupted_copy_finishes_on_the_copy(interrupted, tmp_path):
    copy = tmp_path / "copy" / NAME
    shutil.copytree(interrupted, copy, symlinks=True)
    before = digest(interrupted)
    out = ok(cli("resume", str(copy), cwd=tmp_path, timeout=400)).stdout
    assert "study: done." in out, out[-3000:]
    assert digest(interrupted) == before, "resuming the copy changed the original"
    # every trial in the copy: the Optuna storage, the MLflow store, the Tune experiment
    states = [s for (s,) in rows(copy / "optuna.db", "SELECT state FROM trials")]
    assert len(states) == 4 and set(states) <= {"COMPLETE", "PRUNED"}, states
    runs = toy_runs(copy)
    assert len(runs) == 4 and {status for _, status, _, _ in runs} == {"FINISHED"}, runs
    assert len([p for p in (copy / "toy").iterdir() if p.is_dir()]) == 4
    # each run that ended by itself has its end-of-run file in the copy (the store records the original's path)
    for run_id, _, uri, stopped in runs:
        assert uri.startswith((interrupted / "artifacts").as_uri())
        has = (copy / "artifacts" / run_id / "artifacts" / "results" / "summary.json").is_file()
        assert has == (stopped is None), (run_id, stopped)


def test_a_study_on_a_users_sqlite_store_keeps_its_files_in_its_folder(tmp_path):
    (tmp_path / "cwd").mkdir()
    (tmp_path / "own").mkdir()
    db = tmp_path / "own" / "store.db"
    ok(cli("run", str(project(tmp_path / "project")), "--storage", str(tmp_path / "studies"), "--name", NAME,
           "--mlflow-uri", f"sqlite:///{db}", cwd=tmp_path / "cwd"))
    assert list((tmp_path / "cwd").iterdir()) == []  # never ./mlruns of where the user stands
    folder = tmp_path / "studies" / NAME
    assert json.loads((folder / "study.json").read_text())["mlflow_uri"] == f"sqlite:///{db}"  # kept as given
    finished = [run_id for run_id, _, _, stopped in toy_runs(folder, db) if stopped is None]
    assert finished and all((folder / "artifacts" / r / "artifacts" / "results" / "summary.json").is_file()
                            for r in finished)
    # moved, the folder still reads its files where it lies (the user's store stays where it is)
    moved = tmp_path / "moved" / NAME
    moved.parent.mkdir()
    shutil.move(folder, moved)
    from analysis import open_study

    study = open_study(moved)
    files = [p for r in study.results.runs for p in r.artifacts.values()]
    assert len(study.trials) == 4 and files and all(str(p).startswith(str(moved)) for p in files)
    assert not folder.exists()


def test_an_older_study_json_with_absolute_paths_opens_where_it_lies(finished, tmp_path):
    from analysis import open_study
    from study.spec import load_spec

    folder = tmp_path / "now" / NAME
    shutil.copytree(finished, folder, symlinks=True)
    old = tmp_path / "then" / NAME  # where an older study.json says the folder and its store were
    state = json.loads((folder / "study.json").read_text())
    state.update(study_dir=str(old), mlflow_uri=f"sqlite:///{old / 'mlflow.db'}")
    (folder / "study.json").write_text(json.dumps(state))
    assert len(open_study(folder).trials) == 4
    spec = load_spec(folder)
    assert spec.study_dir == str(folder.resolve()) and spec.mlflow_uri == f"sqlite:///{folder.resolve() / 'mlflow.db'}"
    assert not (tmp_path / "then").exists()


def _corrupt(path: Path) -> None:
    """Garbage over the head of every page after the first: SQLite's header stays, its b-trees break."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    rng = random.Random(0)
    for start in range(page, len(data), page):
        data[start:start + 64] = bytes(rng.randrange(256) for _ in range(64))
    path.write_bytes(bytes(data))


def _foreign(path: Path) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps(["not", "a", "study"]))
        return
    path.unlink()
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE notes (text TEXT)")
        con.execute("INSERT INTO notes VALUES ('a database of something else')")


DAMAGE = {"missing": lambda p: p.unlink(), "empty": lambda p: p.write_bytes(b""), "foreign": _foreign,
          "corrupted": lambda p: _corrupt(p) if p.suffix == ".db" else p.write_text('{"name": "done", "mlfl')}


@pytest.mark.parametrize("file", ["mlflow.db", "optuna.db", "study.json"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_broken_file_of_a_study_folder_is_one_line(file, damage, finished, tmp_path, capsys):
    from analysis import open_study

    folder = tmp_path / "studies" / "broken"  # renamed too: without study.json the folder's name names no study
    shutil.copytree(finished, folder, symlinks=True)
    DAMAGE[damage](folder / file)
    before = digest(folder)
    for args in (["show", str(folder)], ["show", str(folder), "--json"], ["export", str(folder), "--to",
                 str(tmp_path / "out")], ["report", "--storage", str(folder.parent), "--name", folder.name]):
        assert main(args) == 2, (args, capsys.readouterr())
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("study: error: "), (args, err)
    with pytest.raises(DataError):
        open_study(folder)
    assert digest(folder) == before  # nothing created, migrated or written, not even a missing file
    assert not (tmp_path / "out").exists() and not (folder / "report").exists()


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tracking_server_that_does_not_answer_is_one_line_in_seconds(finished, tmp_path, capsys):
    from analysis import open_study

    folder = tmp_path / NAME
    shutil.copytree(finished, folder, symlinks=True)
    state = json.loads((folder / "study.json").read_text())
    (folder / "study.json").write_text(json.dumps({**state, "mlflow_uri": f"http://127.0.0.1:{_unused_port()}"}))
    for args in (["show", str(folder)], ["report", "--storage", str(tmp_path), "--name", NAME]):
        started = time.monotonic()
        assert main(args) == 2
        assert time.monotonic() - started < 10
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no MLflow server answers there" in err[0], err
    started = time.monotonic()
    with pytest.raises(DataError, match="no MLflow server answers there"):
        open_study(folder)
    assert time.monotonic() - started < 10


def test_reading_a_store_that_is_not_there_creates_nothing(finished, tmp_path, capsys):
    from analysis import open_study

    missing = tmp_path / "nowhere" / "mlflow.db"
    assert main(["show", NAME, "--mlflow-uri", f"sqlite:///{missing}"]) == 2
    assert main(["report", "--mlflow-uri", f"sqlite:///{missing}", "--out", str(tmp_path / "report")]) == 2
    with pytest.raises(DataError):
        open_study(NAME, tracking_uri=f"sqlite:///{tmp_path / 'store.db'}")
    assert list(tmp_path.iterdir()) == []  # no store, no folder, no report
    folder = tmp_path / "study"
    shutil.copytree(finished, folder, symlinks=True)
    state = json.loads((folder / "study.json").read_text())
    (folder / "study.json").write_text(json.dumps({**state, "mlflow_uri": f"sqlite:///{missing}"}))
    assert main(["show", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("study: error: ") and "missing" in err[-1], err
    assert not missing.parent.exists()
