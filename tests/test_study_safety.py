"""What `study run` / `study resume` refuse before anything exists, the study folder's lock, and checkpoints that
load without unpickling code.

Each refusal is one `study: error:` line and exit 2, and leaves nothing behind: no study folder, no MLflow run,
no Ray. These run `study.cli.main` in this process (the checks come before Ray is imported for real work) or,
where the data must be read, a `python -m study` subprocess.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from data.errors import DataError
from study import checks
from study.cli import main
from study.lock import LOCK_FILE, StudyLocked, study_lock
from trainables.common import load_checkpoint, load_safely, rng_state, save_checkpoint, set_rng_state

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args: str) -> tuple[int, list[str]]:
    """`study ARGS` in this process: its exit code and every line it printed (stdout and stderr)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, (out.out + out.err).strip().splitlines()


def refused(capsys, tmp_path: Path, *args: str, storage: Path | None = None) -> str:
    """Run `study run covid --preset smoke ARGS` and assert: exit 2, one line, nothing written; the line."""
    storage = storage or tmp_path / "studies"
    before = set(tmp_path.rglob("*"))
    code, lines = run_cli(capsys, "run", "covid", "--preset", "smoke", "--storage", str(storage), *args)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("study: error: "), (code, lines)
    assert set(tmp_path.rglob("*")) == before  # no folder, no MLflow store
    return lines[0]


# ------------------------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("name", ["../x", "..", ".", "sub/dir", "/abs/path", "a\\b", "", "x" * 129, "a b", "é"])
def test_a_name_is_one_safe_path_component(name, capsys, tmp_path):
    line = refused(capsys, tmp_path, "--name", name if name != "/abs/path" else str(tmp_path / "abs"))
    assert "--name" in line
    assert not (tmp_path / "x").exists() and not (tmp_path / "abs").exists()


@pytest.mark.parametrize("name", ["homework-1", "covid_smoke.2", "A", "x" * 128, "..a"])
def test_plain_names_pass(name):
    assert checks.check_name(name) == name


# ------------------------------------------------------------------------------------- seeds, storage, flags
@pytest.mark.parametrize("seed", ["-1", str(2**31)])
def test_seed_out_of_range_is_refused(seed, capsys, tmp_path):
    assert "--seed" in refused(capsys, tmp_path, "--name", "s", "--seed", seed)


def test_storage_that_is_a_file_is_refused(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a file" in refused(capsys, tmp_path, "--name", "s", storage=afile)
    assert "is a file" in refused(capsys, tmp_path, "--name", "s", storage=afile / "below")


def test_storage_that_cannot_be_written_is_refused(capsys, tmp_path):
    # /proc takes no folders, even for root (who passes every permission check)
    assert "not writable" in refused(capsys, tmp_path, "--name", "s", storage=Path("/proc/studies"))


def test_unreachable_mlflow_server_is_refused_in_seconds(capsys, tmp_path):
    started = time.monotonic()
    line = refused(capsys, tmp_path, "--name", "s", "--mlflow-uri", "http://127.0.0.1:1")
    assert "no MLflow server answers" in line and time.monotonic() - started < 10


def test_mlflow_password_is_not_printed(capsys, tmp_path):
    line = refused(capsys, tmp_path, "--name", "s", "--mlflow-uri", "http://user:secret@127.0.0.1:1")
    assert "secret" not in line and "***" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpus_this_machine_does_not_have_are_refused(capsys, tmp_path):
    assert "--gpus-per-trial" in refused(capsys, tmp_path, "--name", "s", "--gpus-per-trial", "1")


def _serve(answer: bytes) -> tuple[int, threading.Event]:
    """A TCP server on 127.0.0.1 that answers every connection with `answer` (not Ray)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def loop():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.recv(1024)
                    conn.sendall(answer)
                except OSError:
                    pass
        srv.close()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1], stop


def test_address_that_is_not_ray_is_refused_in_seconds(capsys, tmp_path):
    port, stop = _serve(b"HTTP/1.0 400 Bad Request\r\n\r\n")
    try:
        started = time.monotonic()
        line = refused(capsys, tmp_path, "--name", "s", "--address", f"127.0.0.1:{port}")
        assert "not a Ray cluster" in line and time.monotonic() - started < 10
    finally:
        stop.set()
    with socket.socket() as s:  # a closed port
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert "no Ray cluster answers" in refused(capsys, tmp_path, "--name", "s", "--address", f"127.0.0.1:{closed}")


@pytest.mark.parametrize("fixed, says", [('[{"lr": "abc"}]', "expected a number"),
                                         ('[{"lr": 1e6}]', "outside the limits"),
                                         ('[{"hidden_size": 0}]', "outside the limits"),
                                         ('[{"cell": "transformer"}]', "cell")])
def test_fixed_configs_are_checked_before_anything_starts(fixed, says, capsys, tmp_path):
    line = refused(capsys, tmp_path, "--name", "s", "--fixed", fixed)
    assert "--fixed run 1" in line and says in line


def test_fixed_runs_as_long_json_text_or_as_a_file(capsys, tmp_path):
    """A JSON text longer than a file name may be is still JSON; a path that is not there is one line."""
    long = json.dumps([{"lr": 1e6, "note": "x" * 300}])
    assert "--fixed run 1" in refused(capsys, tmp_path, "--name", "s", "--fixed", long)
    assert "neither a JSON list nor a readable file" in refused(capsys, tmp_path, "--name", "s", "--fixed",
                                                                str(tmp_path / "none.json"))
    good = tmp_path / "runs.json"
    good.write_text('[{"lr": "abc"}]')
    assert "expected a number" in refused(capsys, tmp_path, "--name", "s", "--fixed", str(good))


def test_vae_config_limits():
    from trainables.vae import VAEConfig

    for bad in ({"lr": 1e6}, {"lr": float("nan")}, {"latent_dim": 0}, {"epochs": 2.5}, {"hidden": "8,x"},
                {"likelihood": "poisson"}, {"test_frac": 1.0}, {"batch_size": True}):
        with pytest.raises(ValueError):
            VAEConfig.from_dict(bad)
    assert VAEConfig.from_dict({"epochs": 3.0}).epochs == 3  # 3.0 from a JSON file means 3


# ------------------------------------------------------------------------------------------- data, in the driver
def _one_country_data(root: Path, real: Path) -> Path:
    covid = root / "covid"
    covid.mkdir(parents=True)
    lines = (real / "covid" / "time_series_covid19_confirmed_global.csv").read_text().split("\n")
    (covid / "time_series_covid19_confirmed_global.csv").write_text("\n".join(lines[:2]) + "\n")
    (covid / "UID_ISO_FIPS_LookUp_Table.csv").write_bytes((real / "covid" / "UID_ISO_FIPS_LookUp_Table.csv").read_bytes())
    return root


def _one_image_data(root: Path) -> Path:
    from PIL import Image

    path = root / "anime_faces" / "anime_faces.zip"
    path.parent.mkdir(parents=True)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="PNG")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data/1.png", buf.getvalue())
    return root


def _subprocess_study(tmp_path: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "STUDY_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("target", ["covid", "vae"])
def test_data_on_which_every_trial_fails_is_one_line_before_ray(target, real_data_dir, tmp_path):
    """A one-country CSV (no set C) or a one-image zip (no test image): exit 2, one line, no folder, no Ray."""
    data = _one_country_data(tmp_path / "d", real_data_dir) if target == "covid" else _one_image_data(tmp_path / "d")
    proc = _subprocess_study(tmp_path, "run", target, "--preset", "smoke", "--storage", str(tmp_path / "s"),
                             "--name", "n", "--data-dir", str(data))
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("study:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stdout + proc.stderr
    assert ("set C is empty" if target == "covid" else "needs at least") in errors[0]
    assert "Traceback" not in proc.stderr and "Ray" not in proc.stdout + proc.stderr
    assert not (tmp_path / "s").exists()


def test_preflight_warns_of_one_failing_fixed_run(real_data_dir):
    from study.preflight import check_part_data
    from study import studyfile
    from study.spec import StudySpec, with_overrides
    from study.tune_part import load_dataset

    spec = StudySpec(target="covid", preset="smoke", name="x", study_dir="unused", mlflow_uri="",
                     data_dir=str(real_data_dir), extra_fixed=[{"seq_len": 500}])
    part = spec.parts(with_overrides(studyfile.resolve("covid", "smoke")[0], spec))[0]
    warnings = check_part_data(part, load_dataset(part)[0])
    assert len(warnings) == 1 and f"fixed run {len(part.fixed)} will fail" in warnings[0]


def test_faces_preflight_names_the_minimum():
    from study.preflight import check_part_data
    from study.studyfile import preset_part

    class Faces:
        images = np.zeros((5, 3, 4, 4), np.uint8)
        source = Path("faces.zip")

    with pytest.raises(DataError, match="at least 6 images"):
        check_part_data(preset_part("smoke", "vae"), Faces())
    Faces.images = np.zeros((6, 3, 4, 4), np.uint8)
    assert check_part_data(preset_part("smoke", "vae"), Faces()) == []


# ------------------------------------------------------------------------------------------------------ lock
def test_lock_refuses_a_second_holder_and_cleans_a_folder_it_made(tmp_path):
    folder = tmp_path / "studies" / "x"
    with study_lock(folder):
        with pytest.raises(StudyLocked, match=f"pid {os.getpid()}"):
            with study_lock(folder):
                pass
        assert (folder / LOCK_FILE).exists()
    with study_lock(folder):  # released when the block ends
        pass
    # a failure before anything was written: the folder (made by the lock) goes again
    other = tmp_path / "studies" / "y"
    with pytest.raises(RuntimeError):
        with study_lock(other):
            raise RuntimeError("boom")
    assert not other.exists() and (tmp_path / "studies").is_dir()


_HOLD = """
import sys, time
from study.lock import study_lock
with study_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_held_study_folder_refuses_run_and_resume(real_data_dir, tmp_path):
    """Another driver holds the folder: `study run` with its name and `study resume` of it are one line, exit 2."""
    from study import studyfile
    from study.spec import StudySpec, save_spec
    from study.tracking import default_uri

    study_dir = tmp_path / "studies" / "busy"
    study_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(study_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = _subprocess_study(tmp_path, "run", "covid", "--preset", "smoke", "--storage", str(tmp_path / "studies"),
                                 "--name", "busy", "--data-dir", str(real_data_dir))
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and f"pid {holder.pid}" in lines[0], lines
        assert sorted(p.name for p in study_dir.iterdir()) == [LOCK_FILE]  # nothing of a second study
        spec = StudySpec(target="covid", preset="smoke", name="busy", study_dir=str(study_dir),
                         mlflow_uri=default_uri(study_dir), data_dir=str(real_data_dir), parent_run_id="0" * 32,
                         experiment_id="1")
        save_spec(spec)
        (study_dir / "study.toml").write_text(studyfile.dumps(studyfile.resolve("covid", "smoke")[0]))
        proc = _subprocess_study(tmp_path, "resume", str(study_dir))
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "another `study run` or `study resume`" in lines[0], lines
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------------------------ checkpoints
class _Payload:
    """Unpickling this runs `open(path, 'w')`: what a crafted state.pt would do with os.system."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickled_payload_in_a_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save({"model": {}, "evil": _Payload(str(marker))}, folder / "state.pt")
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint(folder)
    assert not marker.exists()
    # the same for a saved model read back by the report
    from trainables.vae import load_model

    torch.save({"config": _Payload(str(marker))}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="refused to load"):
        load_model(tmp_path / "model.pt")
    assert not marker.exists()
    # and a plain pickle (no torch zip) is no way around it
    (tmp_path / "plain.pt").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(Exception):
        load_safely(tmp_path / "plain.pt")
    assert not marker.exists()


def test_checkpoints_round_trip_with_weights_only(tmp_path):
    """RNG states (Python, numpy, torch) and configs are stored as tensors and plain values."""
    import random

    gen = torch.Generator().manual_seed(3)
    random.seed(1)
    np.random.seed(2)
    state = rng_state(gen)
    save_checkpoint(tmp_path, rng=state, config={"lr": np.float64(0.1), "path": tmp_path, "sizes": np.arange(2)},
                    epoch=np.int64(4))
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    loaded = load_checkpoint(tmp_path)
    assert loaded["epoch"] == 4 and loaded["config"] == {"lr": 0.1, "path": str(tmp_path), "sizes": [0, 1]}
    set_rng_state(loaded["rng"], gen)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item()) == expected
    with pytest.raises(TypeError, match="weights_only"):
        save_checkpoint(tmp_path, thing=object())
    json.dumps(loaded["config"])  # plain values all the way down


def test_a_study_files_relative_data_dir_reaches_the_trials_absolute(tmp_path, monkeypatch):
    """Trials run in Ray's working_dir, not where `study run` was started: a relative data_dir of the study file
    is the driver's folder, made absolute for the trials (--data-dir and $STUDY_DATA_DIR already are)."""
    import dataclasses

    from study import studyfile
    from study.spec import StudySpec

    monkeypatch.chdir(tmp_path)
    part = studyfile.preset_part("smoke", "covid")
    part = dataclasses.replace(part, constants={**part.constants, "data_dir": "my-data"})
    study = studyfile.StudyFile(name="x", parts=[part])
    spec = StudySpec(target="covid", preset="smoke", name="x", study_dir="unused", mlflow_uri="")
    (got,) = spec.parts(study)
    assert got.constants["data_dir"] == str(tmp_path / "my-data")
    spec = dataclasses.replace(spec, data_dir=str(tmp_path / "flag"))
    assert spec.parts(study)[0].constants["data_dir"] == str(tmp_path / "flag")
