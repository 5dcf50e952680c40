"""A smoke study on synthetic data, in every default `pytest` run, with the real data or without it.

A COVID part (two fixed runs of two cells and one searched trial under ASHA) and the homework's VAE part (KL x1,
x100 and x0) run through Ray Tune, Optuna and MLflow as a user runs them, `python -m study run FILE --storage S
--data-dir DATA` in its own process from a scratch folder, then `python -m study report`. The data folder is
written here: the wave CSV of tests/covid_fixture.py (four correlated countries over 2020-01-22..2020-04-21,
inside the homework range; all four are set C, both classes in every part) and 64 generated 20x20 PNGs in
anime_faces/anime_faces.zip. The cache goes to the scratch folder, and $STUDY_DATA_DIR is removed, so the real
data is never read and the real cache never written.

One study serves every test of the module: about 35 s of wall time on 2 idle cores (run 22 s, report 8 s; Ray's
start and stop about 6 s of it, each trial's worker start about 2.5 s), 1.5 to 2.5 minutes on busy ones.
tests/test_report_smoke.py and tests/test_study_run.py run the real-data studies.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from covid_fixture import snapshot, wave_csv, write_data_dir, write_faces_zip

NAME = "synthetic"
STUDY_FILE = f'''# The synthetic smoke study of tests/test_smoke_synthetic.py: every piece of a study, fewest epochs.
name = "{NAME}"

[[part]]
trainable = "covid"
num_samples = 1
scheduler = "asha"
grace_period = 1
fixed = [
  {{ cell = "rnn", seq_len = 3, hidden_size = 8, num_layers = 1, lr = 0.01 }},
  {{ cell = "gru", seq_len = 3, hidden_size = 8, num_layers = 1, lr = 0.01 }},
]

[part.constants]
epochs = 2
batch_size = 64
date_range = "homework"
split = "random"
seeds = 2
norm = "log1p"
features = "counts"

[part.space]
cell = {{ choices = ["rnn", "gru"] }}
seq_len = {{ int = [2, 5] }}
hidden_size = {{ choices = [8] }}
num_layers = {{ choices = [1] }}
lr = {{ float = [0.003, 0.03], log = true }}

[[part]]
trainable = "vae"
num_samples = 0
scheduler = "none"
fixed = [
  {{ kl_weight = 1.0 }},
  {{ kl_weight = 100.0 }},
  {{ kl_weight = 0.0 }},
]

[part.constants]
epochs = 2
batch_size = 32
image_size = 16
max_images = 64
latent_dim = 4
iw_samples = 4
lr = 0.001

[part.space]
kl_weight = {{ choices = [0.0, 1.0, 100.0] }}
'''
TRIALS = {"covid": 3, "vae": 3}
FIXED = {"covid": 2, "vae": 3}
METRIC = {"covid": "val_acc", "vae": "val_neg_elbo"}
EPOCHS = 2
# Figures a study this small must draw; the others may be skipped with a reason (with these trials, the
# normalisation figure has no run without normalisation, and one searched trial gives no importances).
MUST_DRAW = {"covid_corr_all", "covid_corr_top", "covid_cell_curves", "covid_acc_vs_L", "covid_confusion",
             "covid_world_map", "vae_elbo", "vae_terms", "vae_reconstructions", "vae_samples", "vae_interpolation"}


@dataclass(frozen=True)
class Smoke:
    study_dir: Path
    data_dir: Path
    cache_dir: Path
    run: subprocess.CompletedProcess
    report: subprocess.CompletedProcess
    run_s: float
    report_s: float
    data_before: dict
    data_after: dict


def _study(cwd: Path, env: dict, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    took = time.perf_counter() - start
    assert proc.returncode == 0, (f"study {' '.join(args)} exited {proc.returncode}\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc, took


def synthetic_data_dir(root: Path, faces: int = 64) -> Path:
    """root/covid/ (the wave CSV and the lookup table) and root/anime_faces/anime_faces.zip: a data folder."""
    write_data_dir(root, csv=wave_csv())
    write_faces_zip(root, n=faces)
    return root


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Smoke:
    work = tmp_path_factory.mktemp("smoke")
    # not "data": `python -m` puts the working folder first on sys.path, and a ./data/ folder there shadows the
    # `data` package of an editable install (a namespace package, "cannot import name ... (unknown location)")
    data = synthetic_data_dir(work / "synthetic-data")
    (work / "study.toml").write_text(STUDY_FILE)
    env = {k: v for k, v in os.environ.items() if k not in ("STUDY_DATA_DIR", "RAY_ADDRESS")}
    env |= {"XDG_CACHE_HOME": str(work / "xdg"), "STUDY_CACHE_DIR": str(work / "cache")}
    before = snapshot(data)
    run, run_s = _study(work, env, "run", "study.toml", "--storage", "studies", "--data-dir", str(data), timeout=900)
    report, report_s = _study(work, env, "report", "--storage", "studies", "--name", NAME, timeout=600)
    print(f"synthetic smoke study: run {run_s:.1f} s, report {report_s:.1f} s")
    return Smoke(work / "studies" / NAME, data, work / "cache", run, report, run_s, report_s, before, snapshot(data))


def _store(smoke: Smoke):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{smoke.study_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(NAME)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def _optuna(smoke: Smoke, part: str) -> list:
    import optuna

    return optuna.load_study(study_name=part, storage=f"sqlite:///{smoke.study_dir / 'optuna.db'}").trials


def test_the_study_runs_on_synthetic_data_alone(smoke):
    out = smoke.run.stdout
    assert "study: done." in out, out[-3000:]
    for part, n in TRIALS.items():
        assert re.search(rf"^== {part}: {n} trials \(0 errored", out, re.M), out[-3000:]
    assert "Traceback" not in out + smoke.run.stderr, (out + smoke.run.stderr)[-3000:]
    # the data folder was only read; the image cache went to the cache folder given
    assert smoke.data_after == smoke.data_before
    assert list((smoke.cache_dir / "faces").iterdir())
    assert (smoke.study_dir / "study.toml").is_file() and (smoke.study_dir / "summary.json").is_file()


def test_one_optuna_trial_per_ray_trial(smoke):
    for part, n in TRIALS.items():
        tune = sorted(p.name.split("-")[0] for p in (smoke.study_dir / part).iterdir() if p.is_dir())
        trials = _optuna(smoke, part)
        assert len(tune) == n and sorted(t.user_attrs["ray_trial_id"] for t in trials) == tune, (part, tune)
        groups = [t.user_attrs["group"] for t in sorted(trials, key=lambda t: t.number)]
        assert groups == ["fixed"] * FIXED[part] + ["search"] * (n - FIXED[part]), (part, groups)
        for t in trials:
            assert t.state.name in ("COMPLETE", "PRUNED"), (part, t.number, t.state)
            assert sorted(t.intermediate_values) == list(range(1, len(t.intermediate_values) + 1))
            if t.user_attrs["group"] == "fixed":  # ASHA never stops a fixed run
                assert t.state.name == "COMPLETE" and len(t.intermediate_values) == EPOCHS


def test_one_finished_mlflow_run_per_trial_with_per_epoch_metrics(smoke):
    client, runs = _store(smoke)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].info.artifact_uri.startswith((smoke.study_dir / "artifacts").as_uri())
    for part, n in TRIALS.items():
        trials = {t.user_attrs["ray_trial_id"]: t for t in _optuna(smoke, part)}
        mine = [r for r in runs if r.data.tags.get("trainable") == part]
        assert sorted(r.data.tags["ray.trial_id"] for r in mine) == sorted(trials), part
        for run in mine:
            assert run.info.status == "FINISHED", run.info.run_name
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
            trial = trials[run.data.tags["ray.trial_id"]]
            steps = [m.step for m in client.get_metric_history(run.info.run_id, METRIC[part])]
            assert sorted(steps) == sorted(trial.intermediate_values), (run.info.run_name, steps)
            epochs = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "epoch")]
            assert sorted(epochs) == [(e, e) for e in sorted(steps)], (run.info.run_name, epochs)  # step = epoch
            stopped = "stopped_early" in run.data.tags
            assert trial.state.name == ("PRUNED" if stopped else "COMPLETE"), run.info.run_name
            if not stopped:
                assert trial.value == pytest.approx(run.data.metrics[METRIC[part]])


def test_the_covid_part_has_its_baselines(smoke):
    _, runs = _store(smoke)
    baselines = [r for r in runs if r.data.tags.get("trainable") == "baseline"]
    assert {r.data.tags["study.part"] for r in baselines} == {"covid"}
    assert {r.data.tags["study.baseline"] for r in baselines} >= {"majority", "logistic", "boosted_trees"}
    assert all(r.info.status == "FINISHED" for r in baselines)


def test_the_report_has_both_problems_and_its_figures(smoke):
    from analysis.report import FIGURES

    report = smoke.study_dir / "report"
    text = (report / "report.md").read_text()
    assert "## Problem 1: COVID-19" in text and "## Problem 2: variational autoencoder" in text, text[:2000]
    drawn = {p.stem for p in (report / "figures").iterdir()}
    skipped = dict(re.findall(r"^study: figure (\S+) not drawn: (.+)$", smoke.report.stdout, re.M))
    assert MUST_DRAW <= drawn, (MUST_DRAW - drawn, skipped)
    assert {p.stem for p in (report / "figures").glob("*.png")} >= MUST_DRAW - {"covid_world_map"}
    # every figure is drawn (figures/<part>_<key>.*) or skipped with its reason
    files = {key: key if key.startswith(f"{part}_") else f"{part}_{key}" for part, key, *_ in FIGURES}
    assert set(skipped) <= set(files), skipped
    assert set(files.values()) <= drawn | {files[k] for k in skipped}, set(files.values()) - drawn
    assert all(why.strip() for why in skipped.values())
