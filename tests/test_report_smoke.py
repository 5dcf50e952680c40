"""A real smoke study (covid + vae on the real data) through `study run` and `study report`: every section of the
report is there, every figure is drawn, and the COVID model's architecture is printed from its params.

One study serves every test of the module (several minutes on 2 cores). The hand-built store of
tests/analysis_fixture.py covers only what a real study cannot produce (hostile names, knobs on the numbers).
"""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from analysis.report import FIGURES
from trainables.names import STOPPED_TAG, STUDY_FILE

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]

# The report's sections (analysis/report.py): the homework's numbered questions and the extra ones.
SECTIONS = {
    "h2": ["Problem 1: COVID-19, recurrent classifier of a next-day increase",
           "Problem 2: variational autoencoder on anime faces", "The study as run"],
    "h3": ["Data and preprocessing (from the best run's config)", "Architecture", "i. Correlation between countries",
           "ii. The set C", "iii. Training and test accuracy", "iv. RNN vs LSTM vs GRU, and the sequence length L",
           "Best model", "v. Probability of an increase, world map", "Hyperparameter search (Optuna)",
           "vi. Discussion", "i. Preprocessing and architecture (from the KL x1 run's config)",
           "ii. Learning curves (vi: KL x100, vii: KL x0 on the same axes)",
           "How the runs are chosen and scored", "Log-likelihood: ELBO and the importance-weighted bound", "iii. Reconstructions",
           "iv. Samples from the prior", "v. Interpolation in latent space",
           "KL / reconstruction trade-off and the search", "viii. Discussion: the effect of the KL term"],
}


@dataclass(frozen=True)
class Smoke:
    study_dir: Path
    html: str
    skipped: list[str]  # the `study: figure X not drawn: why` lines `study report` printed


def _study(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "study", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800, env=dict(os.environ))
    assert proc.returncode == 0, f"study {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def smoke(real_data_dir, tmp_path_factory) -> Smoke:
    storage = tmp_path_factory.mktemp("studies")
    _study("run", "homework", "--preset", "smoke", "--storage", str(storage), "--name", "s",
           "--data-dir", str(real_data_dir))
    out = _study("report", "--storage", str(storage), "--name", "s").stdout
    html = (storage / "s" / "report" / "index.html").read_text()
    return Smoke(storage / "s", html, [line for line in out.splitlines() if " not drawn: " in line])


def test_every_section_is_there(smoke):
    for tag, titles in SECTIONS.items():
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", smoke.html)
        missing = [t for t in titles if html.escape(t) not in found]
        assert not missing, f"{tag} missing: {missing}; found: {found}"


def test_every_figure_is_drawn(smoke):
    """A code error fails `study report`; a smoke study has every run and artefact a figure needs."""
    assert not smoke.skipped, smoke.skipped
    assert "Figures not drawn" not in smoke.html
    assert smoke.html.count("<figure>") == len(FIGURES)


def test_covid_architecture_is_printed_from_the_params(smoke):
    pre = re.search(r"<pre>(StackedClassifier\(.*?)</pre>", smoke.html, re.S)
    assert pre, "no StackedClassifier printout"
    text = pre.group(1)
    assert re.search(r"1 x (RNN|LSTM|GRU)\(input \d+, hidden \d+", text), text
    count = re.search(r"([\d,]+) trainable parameters", text)
    assert count and int(count.group(1).replace(",", "")) > 0, text


def test_the_study_file_is_shown(smoke):
    study_file = (smoke.study_dir / STUDY_FILE).read_text()
    assert "[part.space]" in study_file  # the search space, a reader sees it in the report
    section = smoke.html.split("<h2>The study as run</h2>", 1)[1]
    pre = re.search(r"<pre>(.*?)</pre>", section, re.S).group(1)
    assert html.unescape(pre) == study_file


# ------------------------------------------------------------------------------------------- analysis scripts
def test_open_study_has_one_row_per_ray_trial(smoke):
    """trials: one row per Ray trial (the Optuna storage and MLflow agree), typed config columns, the state."""
    import optuna
    from mlflow.tracking import MlflowClient

    from analysis import open_study

    study = open_study(smoke.study_dir)
    storage = f"sqlite:///{smoke.study_dir / 'optuna.db'}"
    client = MlflowClient(f"sqlite:///{smoke.study_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id], "tags.trainable != 'baseline'")
    for part in ("covid", "vae"):
        rows = study.trials[study.trials.part == part]
        optuna_trials = optuna.load_study(study_name=part, storage=storage).trials
        assert sorted(rows.trial_id) == sorted(t.user_attrs["ray_trial_id"] for t in optuna_trials)
        assert sorted(rows.trial_id) == sorted(r.data.tags["ray.trial_id"] for r in runs
                                               if r.data.tags.get("trainable") == part)
        assert dict(zip(rows.trial_id, rows.state)) == {t.user_attrs["ray_trial_id"]: t.state.name
                                                      for t in optuna_trials}
        assert rows.chosen.sum() == 1
    covid = study.trials[study.trials.part == "covid"]
    assert covid.seq_len.dtype.kind == "i" and covid.hidden_size.dtype.kind == "i" and covid.lr.dtype.kind == "f"
    assert set(covid.cell) <= {"rnn", "lstm", "gru"} and covid.val_acc.notna().all() and "val_acc_std" in covid
    assert set(study.history.columns) == {"part", "trial_id", "epoch", "metric", "value"}
    assert set(study.baselines.baseline) >= {"majority", "logistic", "boosted_trees"}


def test_api_and_report_choose_the_same_trial_and_numbers(smoke):
    from analysis import covid_runs, open_study

    study = open_study(smoke.study_dir)
    chosen = study.chosen("covid")
    assert chosen["trial"].run_id == covid_runs.best_sequence_run(study.results).run_id
    run = next(r for r in study.results.runs if r.run_id == chosen["trial"].run_id)
    assert f"Best run {run.name}" in smoke.html and run.name.endswith(chosen["trial"].trial_id)
    assert f"{chosen['test']['test_acc']:.3f}" in smoke.html
    assert set(chosen["baselines"].split) == {"random", "time"}


def test_choices_are_on_validation_and_test_is_scored_once(smoke):
    """VAE: Optuna's metric and every trial's objective are validation numbers; a complete run logs its test
    numbers once (at its last epoch), a pruned one none; the report says what chose. COVID: every trial logs the
    seed ensembles and its best epoch beside the single models, and the report shows both."""
    import optuna

    from analysis import open_study

    study = open_study(smoke.study_dir)
    vae = optuna.load_study(study_name="vae", storage=f"sqlite:///{smoke.study_dir / 'optuna.db'}")
    assert vae.user_attrs["metric"] == "val_neg_elbo"
    runs = [r for r in study.results.runs if r.trainable == "vae"]
    for run in runs:
        steps, _ = run.history["val_neg_elbo"]
        test_steps = run.history.get("test_neg_elbo", ([],))[0]
        assert list(test_steps) == ([steps[-1]] if run.tags.get(STOPPED_TAG) is None else []), run.name
    complete = [t for t in vae.trials if t.state.name == "COMPLETE"]
    by_trial = {r.tags.get("ray.trial_id"): r for r in runs}
    for t in complete:
        assert t.value == pytest.approx(by_trial[t.user_attrs["ray_trial_id"]].metrics["val_neg_elbo"])
    assert "Chosen on validation" in smoke.html and "test numbers chose nothing" in smoke.html
    covid = study.trials[study.trials.part == "covid"]
    for key in ("val_acc_ens", "test_acc_ens", "test_acc_time_ens", "best_epoch"):
        assert covid[key].notna().all(), key
    assert "<th>ensemble</th>" in smoke.html
    assert "-seed ensemble (the mean of the seeds' probabilities) scores" in html.unescape(smoke.html)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_show_and_export_give_the_api_numbers(smoke, tmp_path):
    import json

    import pandas as pd

    from analysis import open_study

    study = open_study(smoke.study_dir)
    shown = _cli("show", str(smoke.study_dir), "--json", "--top", "3")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    chosen = study.trials[study.trials.chosen & (study.trials.part == "covid")].iloc[0]
    assert info["parts"]["covid"]["chosen"]["trial_id"] == chosen.trial_id
    assert info["parts"]["covid"]["top"][0]["val_acc"] == pytest.approx(chosen.val_acc)
    assert sum(info["parts"]["covid"]["states"].values()) == (study.trials.part == "covid").sum()
    assert _cli("show", str(smoke.study_dir)).stdout.count("chosen ") == 2
    exported = _cli("export", str(smoke.study_dir), "--to", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    for name in ("trials", "history", "baselines"):
        table = pd.read_csv(tmp_path / "out" / f"{name}.csv")
        assert list(table.columns) == list(getattr(study, name).columns) and len(table) == len(getattr(study, name))


def test_the_readme_analysis_script_runs(smoke, capsys):
    """The README's script, exactly as shown, with the study folder it names."""
    text = (ROOT / "README.md").read_text().split("### Analysis scripts", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert '"studies/NAME"' in code
    exec(compile(code.replace('"studies/NAME"', repr(str(smoke.study_dir))), "README", "exec"), {})
    out = capsys.readouterr().out
    assert "cell" in out and "seq_len" in out and "test_acc" in out
