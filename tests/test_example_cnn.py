"""The worked plugin example, examples/cnn/: its `train` on a synthetic COVID series (the metrics it reports, their
ranges, its resumption), and its study file run as a user runs it, on a tiny budget and the synthetic data."""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from covid_fixture import write_data_dir
from trainables import registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cnn"
NAMES = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "test_acc_std",
         "val_acc_std", "val_acc_ens", "test_acc_ens", "best_epoch", "epoch_val_acc", "epoch_test_acc",
         "epoch_train_loss", "epoch_time_s"}


def load_example():
    """cnn.py as a study loads `trainable = "cnn:TRAINABLE"` from a study file beside it."""
    found = registry.find("cnn:TRAINABLE", EXAMPLE)
    assert found.ship == EXAMPLE / "cnn.py"
    return sys.modules["cnn"]


cnn = load_example()


def synthetic_csv(days: int = 90, seed: int = 0) -> str:
    """A CSSE-shaped file of four correlated countries (a shared wave and weekday pattern, each its own scale and
    noise): under the default any-pair 0.7 selection all four are set C, with both classes in every part."""
    rng = np.random.default_rng(seed)
    dates = [dt.date(2020, 1, 22) + dt.timedelta(i) for i in range(days + 1)]
    header = ["Province/State", "Country/Region", "Lat", "Long", *(f"{d.month}/{d.day}/{d.year % 100}" for d in dates)]
    shared = 50 + 30 * np.sin(np.arange(days) / 9) + 20 * (np.arange(days) % 7 < 5)
    rows = [",".join(header)]
    for country in ("Algeria", "Brazil", "Chile", "Namibia"):
        daily = np.maximum(0, shared * rng.uniform(0.5, 2) + rng.normal(0, 8, days)).round().astype(int)
        rows.append(",".join(["", country, "0", "0", *map(str, np.concatenate([[0], np.cumsum(daily)]))]))
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("data"), csv=synthetic_csv())


SMALL = dict(date_range="full", split="time", seq_len=7, features="relative+weekday", channels=8, levels=2,
             batch_size=32, seeds=2, device="cpu", num_threads=1)


def run(data_dir, epochs=2, **kw):
    from data.sequence_data import load_source

    cfg = cnn.TRAINABLE.make_config({**SMALL, "data_dir": str(data_dir), "epochs": epochs, **kw.pop("config", {})})
    seen: list[dict] = []
    last = cnn.TRAINABLE.train(cfg, seen.append, data=load_source(str(data_dir), "full"), **kw)
    return seen, last


# ------------------------------------------------------------------------------------------- (a) train itself
def test_the_example_is_a_trainable_with_the_covid_hooks(data_dir):
    t = cnn.TRAINABLE
    assert (t.name, t.metric, t.mode) == ("cnn", "val_acc", "max")
    assert {"channels", "levels", "kernel_size", "seq_len", "split", "epochs", "seeds"} <= set(t.keys())
    cfg = t.make_config({"seq_len": 14, "data_dir": str(data_dir)})
    assert cfg.data.seq_len == 14 and t.baseline_setting(cfg)["seq_len"] == 14  # flat keys reach the nested config
    with pytest.raises(ValueError, match="pool"):
        t.make_config({"pool": "max"})


def test_train_reports_every_metric_in_range(data_dir):
    seen, last = run(data_dir)
    assert [m["epoch"] for m in seen] == [1, 2] and last == seen[-1]
    for m in seen:
        assert NAMES <= set(m), NAMES - set(m)
        for name, v in m.items():
            assert math.isfinite(v), name
            if name.endswith(("_acc", "_acc_ens")):
                assert 0.0 <= v <= 1.0, (name, v)
            if name.endswith(("_loss", "_std")):
                assert v >= 0.0, (name, v)
        assert 1 <= m["best_epoch"] <= m["epoch"]
        # each seed is scored at its best validation epoch so far: never below the epoch's own value
        assert m["val_acc"] >= m["epoch_val_acc"] - 1e-12
    assert seen[1]["val_acc"] >= seen[0]["val_acc"] - 1e-12
    assert seen[0]["val_acc"] == seen[0]["epoch_val_acc"] and seen[0]["test_acc"] == seen[0]["epoch_test_acc"]


def test_one_seed_reports_no_spread(data_dir):
    seen, _ = run(data_dir, epochs=1, config={"seeds": 1, "pool": "mean"})
    assert "test_acc_std" not in seen[0] and seen[0]["test_acc_ens"] == seen[0]["test_acc"]


def test_a_resumed_run_repeats_the_uninterrupted_one(data_dir, tmp_path):
    straight, _ = run(data_dir, epochs=3, config={"dropout": 0.3})
    first, _ = run(data_dir, epochs=2, config={"dropout": 0.3}, checkpoint_dir=str(tmp_path / "ck"))
    rest, _ = run(data_dir, epochs=3, config={"dropout": 0.3}, resume_from=str(tmp_path / "ck"))
    drop = lambda ms: [{k: v for k, v in m.items() if k != "epoch_time_s"} for m in ms]  # noqa: E731
    assert drop(first + rest) == drop(straight)
    # the checkpoint was written with dropout 0.3: another dropout would continue a curve no config produced
    with pytest.raises(ValueError, match=r"different dropout \(0.3, now 0.1\); only .* may change on resume"):
        run(data_dir, epochs=3, config={"dropout": 0.1}, resume_from=str(tmp_path / "ck"))


def test_the_baselines_fit_on_the_same_windows(data_dir):
    from data.sequence_data import load_source

    cfg = cnn.TRAINABLE.make_config({**SMALL, "data_dir": str(data_dir)})
    source = load_source(str(data_dir), "full")
    cnn.TRAINABLE.check(cfg, source)
    rows = cnn.TRAINABLE.baselines(cnn.TRAINABLE.baseline_setting(cfg), source)
    assert {(r["baseline"], r["split"]) for r in rows} >= {("majority", "time"), ("logistic", "time")}


# ------------------------------------------------------------------------------------------- (b) the study file
def toml_value(v) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(v)


def tiny_study_file(folder: Path) -> Path:
    """examples/cnn/time-split-homework.toml on a tiny budget: its first fixed run (smaller) and one searched
    trial, 2 epochs, 2 seeds, on the synthetic series' full range; cnn.py copied beside it."""
    spec = tomllib.loads((EXAMPLE / "time-split-homework.toml").read_text())
    part = spec["part"][0]
    fixed = {**part["fixed"][0], "seq_len": 7, "channels": 8, "levels": 2}
    constants = {**part["constants"], "date_range": "full", "epochs": 2, "seeds": 2}
    space = {**part["space"], "seq_len": {"int": [5, 10]}, "channels": {"choices": [8, 16]}}
    lines = [f"name = {toml_value(spec['name'])}", "", "[[part]]", f"trainable = {toml_value(part['trainable'])}",
             "num_samples = 1", 'scheduler = "none"', f"fixed = [{toml_value(fixed)}]", "", "[part.constants]",
             *(f"{k} = {toml_value(v)}" for k, v in constants.items()), "", "[part.space]",
             *(f"{k} = {toml_value(v)}" for k, v in space.items())]
    folder.mkdir(parents=True)
    (folder / "cnn.py").write_text((EXAMPLE / "cnn.py").read_text())
    path = folder / "study.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_study_file_runs_from_another_folder(data_dir, tmp_path):
    path = tiny_study_file(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "study", "run", str(path), "--storage", "studies", "--data-dir",
                           str(data_dir), "--max-concurrent", "2"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "best val_acc" in proc.stdout and "test_acc" in proc.stdout, proc.stdout[-3000:]
    study_dir = elsewhere / "studies" / "cnn-time-split-homework"

    with sqlite3.connect(f"file:{study_dir / 'optuna.db'}?mode=ro", uri=True) as db:
        assert [n for (n,) in db.execute("SELECT study_name FROM studies")] == ["cnn"]
        states = [s for (s,) in db.execute("SELECT state FROM trials")]
    assert states == ["COMPLETE", "COMPLETE"]

    client = MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(study_dir.name)
    runs = client.search_runs([exp.experiment_id], "tags.trainable = 'cnn'")
    assert len(runs) == 2 and sorted(r.data.tags["group"] for r in runs) == ["fixed", "search"]
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.params["split"] == "time"
        assert {"val_acc", "test_acc", "test_acc_std", "test_acc_ens", "best_epoch"} <= set(r.data.metrics)
        assert [m.step for m in client.get_metric_history(r.info.run_id, "epoch_val_acc")] == [1, 2]
    baselines = client.search_runs([exp.experiment_id], "tags.trainable = 'baseline'")
    lengths = {r.data.params["seq_len"] for r in runs}
    assert {r.data.params["seq_len"] for r in baselines} == lengths  # one set per window length the trials used
    assert {r.data.tags["study.baseline"] for r in baselines} >= {"majority", "logistic", "boosted_trees"}
