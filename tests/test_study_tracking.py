"""The study's parent run in a real MLflow store: its settings as params and its search space as a file."""
from __future__ import annotations

import dataclasses
import json

from mlflow.tracking import MlflowClient

from study import studyfile, tracking
from study.spec import StudySpec, with_overrides


def test_parent_run_has_the_settings_and_the_search_space(tmp_path):
    spec = StudySpec(target="homework", preset="smoke", name="p", study_dir=str(tmp_path / "p"),
                     mlflow_uri="http://alice:s3cret@127.0.0.1:5000/?token=abc", seed=3, epochs=4,
                     gpus_per_trial=0.25, extra_fixed=[{"cell": "gru"}])
    parts = spec.parts(with_overrides(studyfile.resolve("homework", "smoke")[0], spec))
    uri = tracking.default_uri(tmp_path)
    info = tracking.start_study(uri, "p", {"study.kind": "homework"}, artifact_location=(tmp_path / "a").as_uri(),
                                params=tracking.study_params(dataclasses.asdict(spec), parts),
                                files={"search_space.json": tracking.search_spaces(parts)})
    client = MlflowClient(uri)
    params = client.get_run(info.parent_run_id).data.params
    assert {k: params[k] for k in ("target", "preset", "seed", "epochs", "num_samples", "scheduler",
                                   "max_concurrent", "cpus_per_trial", "gpus_per_trial", "address")} == {
        "target": "homework", "preset": "smoke", "seed": "3", "epochs": "4", "num_samples": "file",
        "scheduler": "file", "max_concurrent": "auto", "cpus_per_trial": "1.0", "gpus_per_trial": "0.25",
        "address": "local"}
    assert params["covid.epochs"] == "4" and params["vae.epochs"] == "4"
    assert params["covid.scheduler"] == "asha" and params["vae.scheduler"] == "none"
    assert params["covid.trials"] == str(len(parts[0].fixed) + parts[0].num_samples)
    assert params["extra_fixed_runs"] == "1" and params["git_commit"] == info.git_commit
    assert params["optuna_storage"] == f"sqlite:///{tmp_path / 'p' / 'optuna.db'}"
    # never a secret: the MLflow URI's user, password and token are not logged
    assert params["mlflow_uri"] == "http://127.0.0.1:5000/"
    assert not any("s3cret" in v or "abc" in v for v in params.values())
    assert not {"parent_run_id", "experiment_id", "done"} & set(params)
    doc = json.loads((tmp_path / "a" / info.parent_run_id / "artifacts" / "search_space.json").read_text())
    assert set(doc) == {"covid", "vae"}
    assert doc["covid"]["space"]["cell"] == {"choices": ["rnn", "lstm", "gru"]}
    assert doc["covid"]["fixed"][-1] == {"cell": "gru"} and doc["vae"]["metric"] == parts[1].metric


def test_public_uri_keeps_plain_uris():
    assert tracking.public_uri("sqlite:////tmp/x/mlflow.db") == "sqlite:////tmp/x/mlflow.db"
    assert tracking.public_uri("127.0.0.1:6379") == "127.0.0.1:6379"
    assert tracking.public_uri("https://u:p@host:8443/path?x=1#f") == "https://host:8443/path"


def test_a_trial_workers_exit_in_a_gc_callback_prints_nothing_else_still_does():
    """Ray's SIGTERM handler raises SystemExit; inside a weakref callback Python prints it as an ignored
    exception with a traceback. In a trial worker that is the expected exit: silent. Other errors still print."""
    import subprocess
    import sys

    code = """
import gc, weakref
from study.trial import quiet_exit_in_callbacks

class Thing:
    pass

def die(exc):
    def callback(_):
        raise exc
    t = Thing()
    ref = weakref.ref(t, callback)
    del t
    gc.collect()
    return ref

quiet_exit_in_callbacks()
quiet_exit_in_callbacks()  # twice, as a reused worker would: still one hook
die(SystemExit(1))
die(ValueError("a real problem"))
print("still running")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "still running" in proc.stdout, proc.stderr
    assert "SystemExit" not in proc.stderr and proc.stderr.count("Traceback") == 1, proc.stderr
    assert "ValueError: a real problem" in proc.stderr
