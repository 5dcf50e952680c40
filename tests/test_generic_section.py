"""The generic report section of a real study (a plugin beside its study file, its own baselines, ASHA): the
chosen trial beside the baselines of its own data setting, trials named as `study show` names them, and a state
column in which a trial ASHA stopped is pruned, not finished.

One study, through the real Ray Tune, Optuna and MLflow (`python -m study run`), shared by the tests here."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from analysis import open_study
from analysis.report import write_report
from analysis.results import RunInfo, StudyResults, load_study
from study.cli import main

PLUGIN = '''
from dataclasses import dataclass

from trainables import Trainable


@dataclass
class BasedConfig:
    width: int = 8
    noise: int = 0
    epochs: int = 3


def train(config, report, **context):
    for epoch in range(1, config.epochs + 1):
        loss = 1.0 / (epoch * config.width) + 0.1 * config.noise
        report({"epoch": epoch, "val_loss": loss, "test_loss": 1.1 * loss})


def baseline_setting(config):
    return {"noise": config.noise}


def baselines(setting, data):
    n = setting["noise"]  # each setting's baselines score apart, so a table of the wrong setting shows
    return [{"baseline": "constant", "split": "val", "val_loss": 1.0 + n, "test_loss": 1.5 + n},
            {"baseline": "mean", "split": "val", "val_loss": 0.5 + n, "test_loss": 0.75 + n}]


TRAINABLE = Trainable(name="based", config=BasedConfig, train=train, metric="val_loss", mode="min",
                      baseline_setting=baseline_setting, baselines=baselines)
'''

# The fixed runs are never stopped; every search trial (width 2..4) is far worse than both at epoch 1, so ASHA
# (one trial at a time, grace period 1) stops each there: PRUNED, one epoch run.
STUDY = '''
name = "based"

[[part]]
trainable = "based_model:TRAINABLE"
num_samples = 3
scheduler = "asha"
fixed = [ { width = 64, noise = 0 }, { width = 64, noise = 1 } ]

[part.constants]
epochs = 3

[part.space]
width = { int = [2, 4] }
'''


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, str]:
    """(the study folder, the report's markdown)."""
    base = tmp_path_factory.mktemp("generic")
    (base / "based_model.py").write_text(textwrap.dedent(PLUGIN))
    (base / "based.toml").write_text(STUDY)
    proc = subprocess.run([sys.executable, "-m", "study", "run", "based.toml", "--storage", "studies",
                           "--max-concurrent", "1"], cwd=base, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = base / "studies" / "based"
    write_report(load_study(f"sqlite:///{folder / 'mlflow.db'}", "based"), base / "report")
    return folder, (base / "report" / "report.md").read_text()


def _table(md: str, header: str) -> list[list[str]]:
    """The rows of the markdown table whose header row starts with `header`, as cells."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_trials_are_named_and_stated_as_study_show_says(study, capsys):
    folder, md = study
    trials = open_study(folder).trials
    states = dict(zip(trials.trial_id, trials.state))
    assert sorted(states.values()) == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED", "PRUNED"], states
    assert "run_trial_" not in md  # Ray's run names; the study names a trial by its id
    assert "among the 5 that ran (2 fixed, 3 search); by state: 2 complete, 3 pruned (stopped early by the " \
           "scheduler)." in md
    rows = _table(md, "| trial | group | state | val_loss |")
    assert {r[0]: r[2] for r in rows} == states  # every trial, by its id, with its state
    assert all(r[-1] == "1" for r in rows if r[2] == "PRUNED")  # stopped after its first epoch
    assert main(["show", str(folder)]) == 0
    shown = capsys.readouterr().out
    chosen = open_study(folder).chosen("based")["trial"].trial_id
    assert f"chosen {chosen} on val_loss" in shown and f"Trial {chosen} (fixed, complete)" in md
    # study show puts it beside the same baselines as the report (below): its own setting's
    lines = {line.split(":")[0].strip(): line for line in shown.splitlines() if "baseline " in line}
    assert set(lines) == {"baseline constant (val split)", "baseline mean (val split)"}, shown
    assert "test_loss 1.5" in lines["baseline constant (val split)"]
    assert "val_loss 0.5" in lines["baseline mean (val split)"]


def test_the_chosen_trial_is_beside_its_own_settings_baselines(study):
    folder, md = study
    chosen = open_study(folder).chosen("based")["trial"]
    assert chosen.noise == 0 and chosen.width == 64
    beside = open_study(folder).chosen("based")["baselines"]
    assert sorted(zip(beside.baseline, beside.split, beside.val_loss)) == [("constant", "val", 1.0),
                                                                         ("mean", "val", 0.5)]
    assert "### Beside the baselines" in md
    rows = _table(md, "| trial or baseline | split | val_loss | test_loss |")
    assert rows == [[f"trial {chosen.trial_id} (chosen)", "\\-", f"{1 / 192:.4g}", f"{1.1 / 192:.4g}"],
                    ["constant", "val", "1", "1.5"],
                    ["mean", "val", "0.5", "0.75"]], rows  # noise 0's baselines, not noise 1's (2, 2.5; 1.5, 1.75)


def _run(run_id: str, params: dict, **tags: str) -> RunInfo:
    return RunInfo(run_id=run_id, name=run_id, status="FINISHED", start_time=0, params=params, metrics={},
                   tags={"study.part": "p", **tags})


def test_baselines_of_never_shows_another_settings_baselines():
    """A trial's baselines are those of its own data setting; where what the runs logged cannot tell the settings
    apart (a setting that shares no param with the trial, two settings that both agree), none (None)."""
    trial = _run("t", {"noise": "0", "width": "4"}, trainable="toy")

    def base(run_id: str, key: str, **setting: str) -> RunInfo:
        return _run(run_id, {**setting, "baseline": "b", "split": "val"}, trainable="baseline",
                    **{"study.baseline": "b", "study.baseline_key": key})

    def of(*baselines: RunInfo):
        return StudyResults("s", "uri", "0", {}, [trial, *baselines]).baselines_of(trial)

    assert of() == []
    assert [b.run_id for b in of(base("a", "k0", noise="0"), base("b", "k1", noise="1"))] == ["a"]
    assert of(base("b", "k1", noise="1")) == []  # only another setting's: none, not those
    assert of(base("a", "k0", seed="3")) is None  # nothing in common with the trial: cannot tell
    assert of(base("a", "k0", noise="0"), base("c", "k2", noise="0", other="x")) is None  # two agree
    # the split the baselines trained on (trained_split, as the COVID ones log it) is the trial's split
    covid = _run("u", {"noise": "0", "split": "time"}, trainable="toy")
    results = StudyResults("s", "uri", "0", {}, [covid, base("a", "k0", noise="0", trained_split="random")])
    assert results.baselines_of(covid) == []
