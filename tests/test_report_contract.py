"""One reading of a report (trainables.reports): every number type a plugin may report reaches every store as
the same plain number, and every report the study cannot take fails its own trial with one line.

The unit tests read reports directly (no Ray). One real study (Ray Tune, Optuna, MLflow, `study report`) runs a
made-up plugin whose fixed runs each make one mistake of the contract, or report through one accepted number
type; its last run raises KeyboardInterrupt, which stops the study as a Ctrl-C does, and `study resume` ends it.
Then the summary, Optuna, `study show`, `study export`, `open_study(...).chosen` and the report must name the same
chosen trial with the same value: the trial that reported `np.float32`, which MLflow used to drop.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from trainables.reports import (CHECKPOINT_EPOCH, TUNE_KEYS, ReportError, ReportReader, metric_name_problem,
                                number, reader_for, write_checkpoint_epoch)


# ------------------------------------------------------------------------------------------- the reading itself
@pytest.mark.parametrize("value, plain", [
    (3, 3), (0.25, 0.25), (np.int64(3), 3), (np.int32(-2), -2), (np.float32(0.5), 0.5), (np.float64(0.1), 0.1),
    (np.array(0.75), 0.75), (np.array(4), 4),
])
def test_accepted_numbers_become_plain_python_numbers(value, plain):
    got = number("x", value)
    assert got == plain and type(got) is type(plain)


def test_a_0d_tensor_is_a_number():
    torch = pytest.importorskip("torch")
    assert number("x", torch.tensor(0.5)) == 0.5 and type(number("x", torch.tensor(0.5))) is float
    assert number("x", torch.tensor(7)) == 7
    with pytest.raises(ReportError, match=r"x=.* is a torch.Tensor of shape \(1,\), not a number"):
        number("x", torch.tensor([0.5]))


@pytest.mark.parametrize("value, kind", [
    ("0.5", "str"), ([0.5], "list"), ({"a": 1}, "dict"), (True, "bool"), (np.bool_(True), "numpy.bool"),
    (None, "NoneType"), (np.array([1.0, 2.0]), "numpy.ndarray"),
])
def test_anything_else_is_refused_naming_the_key_and_its_type(value, kind):
    with pytest.raises(ReportError) as err:
        number("train_loss", value)
    line = str(err.value)
    assert line.startswith("train_loss=") and f"is a {kind}" in line and "\n" not in line


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_a_number_that_is_not_finite_is_refused(value):
    with pytest.raises(ReportError, match="not a finite number"):
        number("val_loss", value)


@pytest.mark.parametrize("name", ["acc@1", "a//b", "/abs", "../up", "x" * 251, "", "training_iteration", "done"])
def test_names_mlflow_or_tune_would_refuse(name):
    assert metric_name_problem(name)


def test_the_name_rule_is_mlflows():
    from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

    for name in ["val_loss", "acc top-1", "a/b", "x:y", "acc@1", "a//b", "/abs", "../up", "a/./b", "ü", "%", "."]:
        mlflow_ok = bool(validate_param_and_metric_name(name)) and not path_not_unique(name)
        assert (metric_name_problem(name) is None) == mlflow_ok, name


def test_tunes_own_keys_are_all_reserved():
    from ray.tune import result

    assert set(result.AUTO_RESULT_KEYS) | {result.DONE, result.TRIAL_ID, result.EXPERIMENT_TAG,
                                           result.SHOULD_CHECKPOINT, result.RESULT_DUPLICATE} <= TUNE_KEYS


def _read(reports, budget=3, reader=None):
    reader = reader or ReportReader("val_loss", budget)
    return [reader.read(r) for r in reports], reader


@pytest.mark.parametrize("epochs, problem", [
    ([0, 1, 2], "epochs are 1-based"),
    ([1, 1], "report each epoch once, in order"),
    ([1, 3], "after epoch 1 comes 2"),
    ([1, 2, 3, 4], "passes the budget"),
    ([1.0], "an epoch is a whole number"),
])
def test_epochs_start_at_1_go_up_by_one_and_stay_in_the_budget(epochs, problem):
    with pytest.raises(ReportError, match=problem):
        _read([{"epoch": e, "val_loss": 1.0} for e in epochs])


def test_numpy_epochs_and_every_epoch_once():
    got, reader = _read([{"epoch": np.int64(e), "val_loss": np.float32(1 / e)} for e in (1, 2, 3)])
    assert [g["epoch"] for g in got] == [1, 2, 3] and all(type(g["epoch"]) is int for g in got)
    reader.finish()


def test_a_resumed_trial_goes_on_after_its_checkpoints_epoch(tmp_path):
    write_checkpoint_epoch(tmp_path, 2)
    assert json.loads((tmp_path / CHECKPOINT_EPOCH).read_text()) == {"epoch": 2}
    with pytest.raises(ReportError, match="resumed from the checkpoint of epoch 2: go on at epoch 3"):
        _read([{"epoch": 1, "val_loss": 1.0}], reader=reader_for("val_loss", 3, tmp_path))
    got, _ = _read([{"epoch": 3, "val_loss": 1.0}], reader=reader_for("val_loss", 3, tmp_path))
    assert got[0]["epoch"] == 3
    reader_for("val_loss", 2, tmp_path).finish()  # resumed from its last epoch: nothing left to report


def test_no_report_and_a_swallowed_error_still_fail():
    with pytest.raises(ReportError, match="returned before its first report"):
        ReportReader("val_loss", 3).finish()
    reader = ReportReader("val_loss", 3)
    with pytest.raises(ReportError):
        reader.read({"epoch": 1, "val_loss": math.nan})
    with pytest.raises(ReportError, match="val_loss=nan"):  # every later report, and the end, fail the same way
        reader.read({"epoch": 1, "val_loss": 1.0})
    with pytest.raises(ReportError, match="val_loss=nan"):
        reader.finish()


def test_the_epoch_and_the_objective_are_required():
    with pytest.raises(ReportError, match=r"got keys \['epoch'\]"):
        _read([{"epoch": 1}])
    with pytest.raises(ReportError, match="takes a dict"):
        _read([[1, 0.5]])


# ------------------------------------------------------------------------------------------- one real study
PLUGIN = '''
"""Each fixed run reports through one accepted number type, or makes one mistake of the report contract."""
import sys
from dataclasses import dataclass

import numpy as np

from trainables import Trainable


@dataclass
class Config:
    kind: str = "py"
    scale: float = 1.0
    epochs: int = 3


def value(config, epoch):
    v = config.scale / max(epoch, 1)
    if config.kind == "np32":
        return np.float32(v)
    if config.kind == "arr0":
        return np.array(v)
    if config.kind == "torch":
        import torch
        return torch.tensor(v, dtype=torch.float64)
    return v


def train(config, report, **context):
    k = config.kind
    if k == "none":
        return
    if k == "exit":
        sys.exit(3)
    epochs = {"epoch0": [0, 1, 2], "twice": [1, 1, 2], "past": [1, 2, 3, 4]}.get(k, [1, 2, 3])
    for epoch in epochs:
        metrics = {"epoch": np.int64(epoch) if k == "np32" else epoch, "val_loss": value(config, epoch)}
        if k == "nan" and epoch == 2:
            metrics["val_loss"] = float("nan")
        if k == "str":
            metrics["optimizer"] = "adam"
        if k == "nested":
            metrics["losses"] = {"kl": 1.0}
        if k == "flag":
            metrics["converged"] = True
        if k == "badname":
            metrics["acc@1"] = 0.5
        if k == "interrupt" and epoch == 2:
            raise KeyboardInterrupt
        if k == "swallow" and epoch == 2:
            try:
                report({**metrics, "val_loss": float("inf")})
            except Exception:
                pass
            continue
        report(metrics)


TRAINABLE = Trainable(name="reports", config=Config, train=train, metric="val_loss", mode="min")
'''
# kind -> (scale, what the failed trial's error tag says; None: finishes)
RUNS = {
    "py": (1.0, None), "np32": (0.5, None), "arr0": (0.8, None), "torch": (0.9, None),
    "nan": (0.1, "val_loss=nan: not a finite number"),
    "str": (0.1, "optimizer='adam' is a str, not a number"),
    "nested": (0.1, "losses={'kl': 1.0} is a dict, not a number"),
    "flag": (0.1, "converged=True is a bool, not a number"),
    "badname": (0.1, "'acc@1' is not a metric name MLflow takes"),
    "epoch0": (0.1, "epoch=0: epochs are 1-based"),
    "twice": (0.1, "epoch=1: after epoch 1 comes 2"),
    "past": (0.1, "epoch=4 passes the budget: the config's epochs is 3"),
    "none": (0.1, "train returned before its first report"),
    "exit": (0.1, "TrainExited: train called sys.exit(3)"),
    "swallow": (0.1, "val_loss=inf: not a finite number"),
}
RUNS = {**dict(list(RUNS.items())[:8]), "interrupt": (0.1, "TrainInterrupted: train raised KeyboardInterrupt"),
        **dict(list(RUNS.items())[8:])}  # in the middle: the resume runs the trials after it
CHOSEN = "np32"  # the lowest val_loss of the runs that finish: 0.5 / 3 as a float32


def _study(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("reports")
    (work / "reports_plugin.py").write_text(textwrap.dedent(PLUGIN))
    fixed = ", ".join(f'{{ kind = "{k}", scale = {s} }}' for k, (s, _) in RUNS.items())
    (work / "reports.toml").write_text(textwrap.dedent(f'''
        name = "reports"

        [[part]]
        trainable = "reports_plugin:TRAINABLE"
        num_samples = 0
        scheduler = "none"
        fixed = [{fixed}]
    '''))
    run = _study(work, "run", "reports.toml", "--storage", "studies", "--max-concurrent", "2")
    folder = work / "studies" / "reports"
    resume = _study(work, "resume", str(folder))
    return work, folder, run, resume


def _runs(folder: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("reports")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, {r.data.params["kind"]: r for r in runs if "kind" in r.data.params}


def test_a_keyboard_interrupt_in_train_stops_the_study_as_ctrl_c_does(study):
    _, folder, run, resume = study
    out = run.stdout + run.stderr
    assert run.returncode == 130, out[-3000:]
    assert f"study resume {folder}" in out or "study resume" in out, out[-3000:]
    assert resume.returncode == 1, (resume.stdout + resume.stderr)[-3000:]  # errored trials: never exit 0


def test_each_mistake_fails_its_own_trial_with_one_line(study):
    _, folder, _, _ = study
    _, runs = _runs(folder)
    assert sorted(runs) == sorted(RUNS)
    for kind, (_, error) in RUNS.items():
        run = runs[kind]
        if error is None:
            assert run.info.status == "FINISHED", (kind, run.data.tags.get("error"))
        else:
            assert run.info.status == "FAILED", kind
            assert error in run.data.tags["error"] and "\n" not in run.data.tags["error"], (kind, run.data.tags)


def test_every_accepted_type_reaches_mlflow_whole(study):
    _, folder, _, _ = study
    client, runs = _runs(folder)
    for kind in ("py", "np32", "arr0", "torch"):
        history = client.get_metric_history(runs[kind].info.run_id, "val_loss")
        assert sorted(m.step for m in history) == [1, 2, 3], kind
        assert runs[kind].data.metrics["val_loss"] == pytest.approx(RUNS[kind][0] / 3, rel=1e-6), kind
    nan = client.get_metric_history(runs["nan"].info.run_id, "val_loss")
    assert [m.step for m in nan] == [1]  # the NaN epoch never reached a store


def test_every_reader_names_the_same_chosen_trial_with_the_same_value(study):
    import optuna

    from analysis.api import open_study

    work, folder, _, _ = study
    _, runs = _runs(folder)
    trial_id = runs[CHOSEN].data.tags["ray.trial_id"]
    value = runs[CHOSEN].data.metrics["val_loss"]
    assert value == float(np.float32(0.5 / 3))

    summaries = json.loads((folder / "summary.json").read_text())
    best = next(s for s in summaries if s["part"] == "reports")["best"]
    assert (best["trial_id"], best["value"]) == (trial_id, value)

    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}")
    optuna_best = optuna.load_study(study_name="reports", storage=storage).best_trial
    assert (optuna_best.user_attrs["ray_trial_id"], optuna_best.value) == (trial_id, value)

    show = json.loads(_study(work, "show", str(folder), "--json").stdout)["parts"]["reports"]["chosen"]
    assert (show["trial_id"], show["val_loss"]) == (trial_id, value)

    assert _study(work, "export", str(folder), "--to", str(work / "export")).returncode == 0
    import pandas as pd

    trials = pd.read_csv(work / "export" / "trials.csv")
    row = trials[trials.chosen].iloc[0]
    assert (row.trial_id, row.val_loss) == (trial_id, value)

    chosen = open_study(folder).chosen("reports")["trial"]
    assert (chosen.trial_id, chosen.val_loss) == (trial_id, value)

    report = _study(work, "report", "--storage", "studies", "--name", "reports")
    assert report.returncode == 0, (report.stdout + report.stderr)[-3000:]
    text = (folder / "report" / "report.md").read_text()
    assert trial_id in text and f"{value:.4f}" in text, text[:3000]


def test_the_mark_moves_only_when_the_state_was_written(tmp_path):
    from trainables.reports import EpochMarks, checkpoint_epoch

    marks, folder = EpochMarks(), tmp_path / "checkpoint"
    assert not marks.mark(folder, 1)  # no folder: no state, no checkpoint
    folder.mkdir()
    assert not marks.mark(folder, 1)  # an empty folder neither
    (folder / "state.json").write_text('{"epoch": 2}')
    assert marks.mark(folder, 2) and checkpoint_epoch(folder) == 2
    assert marks.mark(folder, 3) and checkpoint_epoch(folder) == 2  # state written every other epoch
    (folder / "state.json").write_text('{"epoch": 4}')
    assert marks.mark(folder, 4) and checkpoint_epoch(folder) == 4
