"""Real studies: Ray Tune + Optuna + MLflow on the real data, checked from the MLflow store itself.

Each study runs in its own `python -m study.cli` process (its own local Ray), as a user would run it, so a
kill or a second cluster in one test cannot disturb another.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ray_nodes import ray_nodes
from study.studyfile import preset_part, space_spec

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def study(*args: str, env: dict | None = None, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "study", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"study {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def store(study_dir: Path) -> tuple[MlflowClient, object, list]:
    """The parent run and the child runs of a study, read back from its MLflow store."""
    client = MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(study_dir.name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    # the trials' runs; the COVID baselines are the parent's children too, tagged study.baseline
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags and "study.baseline" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    return client, parents[0], children


def interrupt_when(args: list[str], study_dir: Path, log: Path, ready) -> tuple[int, str]:
    """Start `study ARGS`, send SIGINT (a Ctrl-C) once ready(client, children) holds; (exit code, output)."""
    with open(log, "w") as out:  # a file, not a pipe: the progress table would fill a pipe and block the study
        proc = subprocess.Popen([sys.executable, "-m", "study", *args], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 300
        while time.time() < deadline:
            assert proc.poll() is None, f"study exited early ({proc.returncode}):\n{log.read_text()[-3000:]}"
            # study.json appears once the MLflow store and the parent run exist: only then read the store
            if (study_dir / "study.json").exists():
                client, _, children = store(study_dir)
                if ready(client, children):
                    break
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    return proc.returncode, log.read_text()


def tune_trials(study_dir: Path, part: str) -> list[dict]:
    """Trial ids and last results, from the Tune experiment folder's result files."""
    out = []
    for result in sorted((study_dir / part).glob("*/result.json")):
        lines = result.read_text().strip().splitlines()
        out.append(json.loads(lines[-1]) if lines else {})
    return out


def test_smoke_covid_is_tracked_in_mlflow(real_data_dir, tmp_path):
    proc = study("run", "covid", "--preset", "smoke", "--storage", str(tmp_path), "--name", "smoke",
                 "--max-concurrent", "2", "--scheduler", "none")
    assert f"best {preset_part('smoke', 'covid').metric}" in proc.stdout
    # a clean study prints no traceback (a trial actor still exiting at Ray's shutdown used to print one)
    assert "Traceback" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    assert "study: done." in proc.stdout and "0 errored" in proc.stdout
    study_dir = tmp_path / "smoke"
    client, parent, children = store(study_dir)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["study.preset"] == "smoke"
    # the study folder holds everything: the runs' artefacts too, not ./mlruns of the working directory
    assert parent.info.artifact_uri.startswith((study_dir / "artifacts").as_uri())
    assert not (ROOT / "mlruns").exists()
    part = preset_part("smoke", "covid")
    assert len(children) == part.total_trials
    for run in children:
        assert run.info.status == "FINISHED"
        # every config value, defaults included (selection, threshold, norm were never set by the preset)
        assert {"cell", "seq_len", "hidden_size", "lr", "epochs", "selection", "threshold", "norm"} <= set(run.data.params)
        assert run.data.tags["trainable"] == "covid" and run.data.tags["data_hash"]
        history = client.get_metric_history(run.info.run_id, "test_acc")
        assert [m.step for m in history] == [1, 2]
        names = {a.path for a in client.list_artifacts(run.info.run_id, "results")}
        assert {"results/predictions.json", "results/confusion.json"} <= names
    groups = [r.data.tags["group"] for r in children]
    assert groups.count("fixed") == len(part.fixed) and groups.count("search") == part.num_samples
    # Two trials at once: some pair of runs overlaps in time.
    spans = sorted((r.info.start_time, r.info.end_time) for r in children)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans


def test_failing_trial_is_failed_and_study_goes_on(real_data_dir, tmp_path):
    """A trial whose L is longer than the series raises inside the trial: FAILED in MLflow, others finish."""
    bad = json.dumps([{"cell": "gru", "seq_len": 500, "hidden_size": 8, "num_layers": 1, "lr": 1e-2}])
    proc = study("run", "covid", "--preset", "smoke", "--storage", str(tmp_path), "--name", "fail",
                 "--num-samples", "0", "--scheduler", "none", "--fixed", bad, check=False)
    # the driver saw it coming (one warning), the study ran the rest, and the exit code says a trial errored
    trials = len(preset_part("smoke", "covid").fixed) + 1
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    assert [line for line in proc.stdout.splitlines() if line.startswith("study: warning:")] == [
        line for line in proc.stdout.splitlines() if "fixed run" in line and "will fail" in line]
    assert f"study: finished with 1 of {trials} trials errored (covid 1/{trials})" in proc.stdout
    assert "study: done." not in proc.stdout
    _, _, children = store(tmp_path / "fail")
    status = sorted(r.info.status for r in children)
    assert status == ["FAILED"] + ["FINISHED"] * len(preset_part("smoke", "covid").fixed), status
    failed = next(r for r in children if r.info.status == "FAILED")
    assert "longer than" in failed.data.tags["error"] or "seq_len" in failed.data.tags["error"]
    states = {t.user_attrs["ray_trial_id"]: t.state.name for t in optuna_trials(tmp_path / "fail", "covid")}
    assert states.pop(failed.data.tags["ray.trial_id"]) == "FAIL" and set(states.values()) == {"COMPLETE"}


def test_interrupted_study_resumes_without_duplicates(real_data_dir, tmp_path):
    study_dir = tmp_path / "kill"
    args = ["run", "covid", "--preset", "smoke", "--storage", str(tmp_path), "--name", "kill",
            "--num-samples", "4", "--max-concurrent", "1", "--epochs", "3", "--scheduler", "none",
            "--set", "patience=0"]  # every trial runs its 3 epochs
    # wait until two trials finished, then interrupt the driver
    code, out = interrupt_when(args, study_dir, tmp_path / "run.log",
                               lambda client, children: sum(r.info.status == "FINISHED" for r in children) >= 2)
    assert code == 130, out[-3000:]
    assert "study resume" in out
    client, _, before = store(study_dir)
    finished_before = {r.info.run_id: r.info.end_time for r in before if r.info.status == "FINISHED"}
    assert_one_optuna_trial_per_ray_trial(study_dir, preset_part("smoke", "covid"), client, before, states=False)
    total = len(preset_part("smoke", "covid").fixed) + 4
    assert 2 <= len(finished_before) < total

    study("resume", str(study_dir))
    client, parent, children = store(study_dir)
    assert parent.info.status == "FINISHED"
    assert len(children) == total and len(tune_trials(study_dir, "covid")) == total
    assert all(r.info.status == "FINISHED" for r in children)
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")]
        assert sorted(set(steps)) == [1, 2, 3], (run.info.run_name, steps)
        if run.info.run_id in finished_before:  # kept, not rerun
            assert run.info.end_time == finished_before[run.info.run_id]
    # the resumed search went on in the same Optuna storage: still one Optuna trial per Ray trial
    assert_one_optuna_trial_per_ray_trial(study_dir, preset_part("smoke", "covid"), client, children)



@pytest.mark.slow
def test_ctrl_c_while_every_trial_runs_is_an_interruption(real_data_dir, tmp_path):
    """Trials running at a Ctrl-C come back from Tune TERMINATED, like finished ones: with every planned trial
    running, the study must still say it was interrupted, exit 130, run no baselines, and resume must finish it."""
    study_dir = tmp_path / "all-running"
    fixed = json.dumps([{"cell": "gru", "seq_len": 5, "hidden_size": 8, "num_layers": 1, "lr": 0.01,
                         "norm": "log1p", "features": "counts"}])
    args = ["run", "covid", "--preset", "search", "--num-samples", "0", "--fixed", fixed, "--epochs", "40",
            "--set", "seeds=1", "--set", "patience=0", "--storage", str(tmp_path), "--name", "all-running",
            "--scheduler", "none"]
    # wait until the only trial has reported an epoch, then interrupt
    code, out = interrupt_when(args, study_dir, tmp_path / "run.log", lambda client, children: bool(
        children and client.get_metric_history(children[0].info.run_id, "val_acc")))
    assert code == 130, out[-3000:]
    assert "study resume" in out and "study: done" not in out and "study: baselines" not in out
    client, _, children = store(study_dir)
    steps = [m.step for m in client.get_metric_history(children[0].info.run_id, "val_acc")]
    assert len(children) == 1 and max(steps) < 40, steps

    study("resume", str(study_dir))
    client, parent, children = store(study_dir)
    assert parent.info.status == "FINISHED" and [r.info.status for r in children] == ["FINISHED"]
    steps = [m.step for m in client.get_metric_history(children[0].info.run_id, "val_acc")]
    assert sorted(set(steps)) == list(range(1, 41)), steps


@pytest.mark.slow
def test_two_node_cluster(real_data_dir, tmp_path):
    """`ray start --head` + a second `ray start --address` on this machine; trials land on both nodes."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    with ray_nodes(env, cpus=1, workers=1, log_dir=tmp_path) as port:
        study("run", "covid", "--preset", "smoke", "--storage", str(tmp_path), "--name", "cluster",
              "--address", f"127.0.0.1:{port}", "--num-samples", "2", "--max-concurrent", "2",
              "--scheduler", "none", env={"RAY_AUTH_MODE": "disabled"})
    _, parent, children = store(tmp_path / "cluster")
    assert parent.info.status == "FINISHED" and len(children) == len(preset_part("smoke", "covid").fixed) + 2
    nodes = {r.data.tags["ray.node_id"] for r in children}
    assert len(nodes) == 2, nodes


@pytest.mark.filterwarnings("ignore")
def test_bad_data_fails_fast_and_writes_nothing(tmp_path):
    """A bad data file: one line naming it, exit 2, before Ray starts; no study folder, no MLflow run."""
    env = {k: v for k, v in os.environ.items() if k != "STUDY_DATA_DIR"}
    bad = tmp_path / "data" / "covid" / "time_series_covid19_confirmed_global.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("")  # present (no download is tried) but empty
    proc = subprocess.run([sys.executable, "-m", "study", "run", "covid", "--preset", "smoke", "--storage",
                           str(tmp_path / "s"), "--name", "x", "--data-dir", str(tmp_path / "data")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**env, "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("study: error:")]
    assert len(errors) == 1 and str(bad) in errors[0], proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout
    assert not (tmp_path / "s" / "x").exists()


def optuna_trials(study_dir: Path, part: str) -> list:
    """The part's trials in the study folder's Optuna storage (WAITING ones, fixed runs not yet asked for, left out)."""
    import optuna

    study = optuna.load_study(study_name=part, storage=f"sqlite:///{study_dir / 'optuna.db'}")
    return sorted((t for t in study.trials if t.state != optuna.trial.TrialState.WAITING), key=lambda t: t.number)


def assert_one_optuna_trial_per_ray_trial(study_dir: Path, part, client: MlflowClient, children: list,
                                          states: bool = True) -> None:
    """Each Ray trial (an MLflow child run) is one Optuna trial: same params, its state, one value per epoch.

    `states=False` after an interrupt of a one-at-a-time study: a trial may have closed its MLflow run before the
    driver heard of its end, and the trial asked for last may not have opened its run yet.
    """
    children = [r for r in children if "ray.trial_id" in r.data.tags]  # trials, not the study's other runs
    trials = optuna_trials(study_dir, part.trainable)
    by_ray = {t.user_attrs["ray_trial_id"]: t for t in trials}
    assert len(by_ray) == len(trials)
    if states:
        assert set(by_ray) == {r.data.tags["ray.trial_id"] for r in children}
    else:
        assert set(by_ray) >= {r.data.tags["ray.trial_id"] for r in children}
        assert len(trials) <= len(children) + 1, (len(trials), len(children))
    groups = [t.user_attrs["group"] for t in trials]
    assert groups == sorted(groups, key=lambda g: g != "fixed")  # the fixed runs are the first trials
    for run in children:
        trial = by_ray[run.data.tags["ray.trial_id"]]
        assert {k: v if isinstance(v, str) else json.dumps(v) for k, v in trial.params.items()} == {
            k: run.data.params[k] for k in trial.params}
        if not states:
            continue
        if run.info.status not in ("FINISHED", "FAILED"):  # interrupted: resumed later as the same trial
            assert trial.state.name == "RUNNING", (run.info.run_name, run.info.status, trial.state)
            continue
        expected = "FAIL" if run.info.status == "FAILED" else "PRUNED" if "stopped_early" in run.data.tags else "COMPLETE"
        assert trial.state.name == expected, (run.info.run_name, trial.state)
        history = client.get_metric_history(run.info.run_id, part.metric)
        assert sorted(trial.intermediate_values) == sorted({m.step for m in history}), run.info.run_name
        if expected == "COMPLETE":
            last = max(history, key=lambda m: (m.step, m.timestamp))
            assert trial.value == pytest.approx(last.value)


@pytest.mark.slow
def test_smoke_covid_keeps_optuna_storage_and_parent_settings(real_data_dir, tmp_path):
    """The preset's own scheduler (ASHA): stopped trials are PRUNED in optuna.db; the parent run has the settings."""
    study("run", "covid", "--preset", "smoke", "--storage", str(tmp_path), "--name", "optuna", "--seed", "1")
    study_dir = tmp_path / "optuna"
    client, parent, children = store(study_dir)
    part = preset_part("smoke", "covid")
    assert len(children) == part.total_trials
    assert_one_optuna_trial_per_ray_trial(study_dir, part, client, children)
    params = parent.data.params
    assert {k: params[k] for k in ("target", "preset", "seed", "num_samples", "epochs", "scheduler", "address")} == {
        "target": "covid", "preset": "smoke", "seed": "1", "num_samples": "file", "epochs": "file",
        "scheduler": "file", "address": "local"}
    assert params["covid.scheduler"] == part.scheduler and params["covid.trials"] == str(part.total_trials)
    assert params["optuna_storage"] == f"sqlite:///{study_dir / 'optuna.db'}"
    space = json.loads(Path(client.download_artifacts(parent.info.run_id, "search_space.json", str(tmp_path))).read_text())
    assert space["covid"]["space"] == {k: space_spec(d) for k, d in part.space.items()}
    assert space["covid"]["metric"] == part.metric


def test_show_and_export_while_the_study_runs(real_data_dir, tmp_path):
    """Read-only: `study show` and `study export` answer while the driver holds the folder's lock."""
    study_dir = tmp_path / "live"
    with open(tmp_path / "run.log", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "study", "run", "covid", "--preset", "smoke", "--epochs", "4",
                                 "--storage", str(tmp_path), "--name", "live", "--data-dir", str(real_data_dir)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.time() + 300
            while time.time() < deadline:
                assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
                if (study_dir / "study.json").exists():
                    _, _, children = store(study_dir)
                    if sum(r.info.status == "FINISHED" for r in children) >= 2:
                        break
                time.sleep(0.5)
            shown = study("show", str(study_dir), "--json")
            parts = json.loads(shown.stdout)["parts"]
            assert sum(parts["covid"]["states"].values()) >= 2 and parts["covid"]["top"]
            study("export", str(study_dir), "--to", str(tmp_path / "out"))
            assert (tmp_path / "out" / "trials.csv").read_text().count("\n") >= 3  # header + two trials
            assert proc.poll() is None, "the study ended before it could be read while running"
        finally:
            assert proc.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()[-3000:]
