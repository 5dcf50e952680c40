"""A quiet console during `study run`: a failed trial is one line (its error, where its full traceback is), not
Ray's traceback; Ray's lines that say nothing to a study's user are not shown; everything else of Ray's still is.

One real study (a plugin beside its study file whose train raises on one config), run as a user runs it."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.console import error_text, quiet_tune

PLUGIN = '''
from dataclasses import dataclass

from trainables import Trainable


@dataclass
class CursedConfig:
    width: int = 8
    epochs: int = 2


def train(config, report, **context):
    if config.width == 3:
        raise RuntimeError("width 3 is cursed\\nsee the second line")
    for epoch in range(1, config.epochs + 1):
        report({"epoch": epoch, "val_loss": 1.0 / (epoch * config.width)})


TRAINABLE = Trainable(name="cursed", config=CursedConfig, train=train, metric="val_loss", mode="min")
'''

STUDY = '''
name = "cursed"

[[part]]
trainable = "cursed_model:TRAINABLE"
num_samples = 0
fixed = [ { width = 3 }, { width = 4 } ]

[part.constants]
epochs = 2
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    base = tmp_path_factory.mktemp("quiet")
    (base / "cursed_model.py").write_text(PLUGIN)
    (base / "cursed.toml").write_text(STUDY)
    env = {k: v for k, v in os.environ.items() if k != "TUNE_PRINT_ALL_TRIAL_ERRORS"}
    proc = subprocess.run([sys.executable, "-m", "study", "run", "cursed.toml", "--storage", "studies"], cwd=base,
                          capture_output=True, text=True, timeout=600, env=env)
    return proc, base / "studies" / "cursed"


def test_a_failed_trial_is_one_line_with_its_error_and_traceback_file(run):
    proc, folder = run
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]  # a study with a failed trial still says so by its exit status
    lines = [line for line in out.splitlines() if " failed: " in line]
    # the whole message, folded onto one line (the pickled exception, not the traceback's last line)
    assert len(lines) == 1 and "RuntimeError: width 3 is cursed see the second line" in lines[0], out[-3000:]
    found = re.fullmatch(r"study: cursed: trial (\w+) failed: .*; full traceback: (.+)", lines[0])
    assert found, lines[0]
    trial, path = found.groups()
    assert Path(path).is_file() and Path(path).parent.parent == folder / "cursed", path  # in the study folder
    assert 'raise RuntimeError("width 3 is cursed' in Path(path).read_text()  # the full traceback is there
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    failed = client.search_runs([client.get_experiment_by_name("cursed").experiment_id], "attributes.status = 'FAILED'")
    assert [r.data.tags["ray.trial_id"] for r in failed] == [trial]  # named as `study show` names it
    assert "width 3 is cursed" in failed[0].data.tags["error"]


def test_ray_says_nothing_that_is_not_for_the_user(run):
    proc, _ = run
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "Trial task failed" not in out, out[-3000:]
    assert "experiment_path" not in out and "Trials did not complete" not in out, out[-3000:]
    # the study's own lines stay
    assert "study: finished with 1 of 2 trials errored (cursed 1/2)" in proc.stdout
    assert "best val_loss = 0.1250" in proc.stdout and "study: report:" in proc.stdout


def test_only_the_unsaid_records_are_dropped(caplog):
    """After a Ctrl-C Tune suggests `Tuner.restore(...)`: dropped (the study prints `study resume`); another
    warning of the same logger is kept; the switch and filters are put back after the fit."""
    tune_log = logging.getLogger("ray.tune.tune")
    before = os.environ.get("TUNE_PRINT_ALL_TRIAL_ERRORS")
    with caplog.at_level(logging.WARNING, logger="ray.tune.tune"), quiet_tune():
        assert os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] == (before or "0")
        tune_log.warning("Experiment has been interrupted, but the most recent state was saved.\nResume "
                         'experiment with: Tuner.restore(path="x", trainable=...)')
        tune_log.error("Trials did not complete: [run_trial_1]")
        tune_log.warning("Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run.")
    assert [r.getMessage() for r in caplog.records] == [
        "Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run."]
    assert os.environ.get("TUNE_PRINT_ALL_TRIAL_ERRORS") == before and not tune_log.filters
    with caplog.at_level(logging.WARNING, logger="ray.tune.tune"):
        tune_log.error("Trials did not complete: [run_trial_1]")  # outside a study's fit: Ray's own behaviour
    assert "Trials did not complete: [run_trial_1]" in caplog.text


def test_an_error_is_one_line():
    from study.faults import OwnError

    assert error_text(ValueError("a\n  b"), None) == "ValueError: a b"
    assert error_text(OwnError("KeyError: 'x' (not retried)"), None) == "KeyError: 'x' (not retried)"
    assert error_text(KeyboardInterrupt(), None) == "KeyboardInterrupt"
    long = error_text(ValueError("x" * 1000), None)
    assert len(long) == 300 and long.endswith("...")
    assert error_text(None, None) == "no error recorded"
