"""analysis/ on a part whose trainable it cannot import (a plugin beside its study file on another machine): the
generic report section, `open_study` and `study show` read only what every study logs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import open_study
from analysis.report import write_report
from analysis.results import load_study
from analysis_fixture import FixtureKnobs, TOY_EPOCHS, build_store, build_toy_store, toy_loss
from study.cli import main
from trainables.names import STUDY_STATE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return build_toy_store(tmp_path_factory.mktemp("toy") / "toy-study")


def test_the_report_has_a_generic_section_with_figures(toy, tmp_path):
    results = load_study(f"sqlite:///{toy / 'mlflow.db'}")
    write_report(results, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    figures = tmp_path / "report" / "figures"
    for name in ("toy_learning_curves.png", "toy_search_history.png", "toy_search_importance.png",
                 "toy-b/toy-b_learning_curves.png", "toy-b/toy-b_search_history.png"):
        assert (figures / name).stat().st_size > 2000, name
        assert f"figures/{name}" in md
    assert "## Part toy\n" in md and "## Part toy-b (trainable toy)" in md
    assert ("Trials are chosen on val_loss (lower is better) among the 6 that ran (1 fixed, 5 search); by state: "
            "6 complete, 1 failed." in md)
    chosen = min(results.select(part="toy"), key=lambda r: r.metrics["val_loss"])
    assert f"Trial {chosen.trial_id} (fixed, complete)" in md and "Reported, not used to choose:" in md
    assert "| test_loss |" in md.split("Reported, not used to choose:")[1]
    assert "| trial | group | state | val_loss | lr | width | epochs run |" in md
    # one trial cannot explain anything: the reason, in one line
    assert "toy-b_search_importance: needs at least two finished toy-b trials" in md
    assert "Problem 1" not in md and "Problem 2" not in md


def test_the_homework_report_and_a_plugin_part_side_by_side(tmp_path):
    """The built-in parts keep their own sections, the plugin part gets the generic one, in the study's order."""
    results = load_study(build_store(tmp_path / "store", knobs=FixtureKnobs(toy_trials=4)))
    results.data_dir = str(tmp_path / "no-data-here")
    write_report(results, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert md.index("## Problem 1") < md.index("## Problem 2") < md.index("## Part toy")
    assert (tmp_path / "report" / "figures" / "toy_learning_curves.png").is_file()
    assert set(results.skipped) == {"corr_all", "corr_top"}  # every other figure drawn, the toy's too


def test_open_study_reads_a_plugin_part(toy):
    study = open_study(toy)
    toy_rows = study.trials[study.trials.part == "toy"]
    assert set(study.trials.part) == {"toy", "toy-b"} and len(toy_rows) == 7
    assert sorted(toy_rows.state.value_counts().items()) == [("COMPLETE", 6), ("FAIL", 1)]  # from optuna.db
    assert toy_rows.width.dtype.kind == "i" and toy_rows.lr.dtype.kind == "f" and set(toy_rows["name"]) == {"toy model"}
    assert set(study.history[study.history.part == "toy"].metric) == {"val_loss", "test_loss", "epoch_time_s"}
    chosen = study.chosen("toy")
    finished = toy_rows[toy_rows.state == "COMPLETE"]
    best = finished.loc[finished.val_loss.idxmin()]
    assert chosen["trial"].trial_id == best.trial_id != "toy_0006"  # the failed trial's 0.001 chose nothing
    assert chosen["metric"] == "val_loss" and study.objective("toy") == ("val_loss", "min")
    assert chosen["test"] == {"test_loss": pytest.approx(1.1 * toy_loss(best.width, best.lr, TOY_EPOCHS) + 0.01)}
    assert "baselines" not in chosen and study.baselines.empty
    assert study.chosen("toy-b")["trial"].trial_id == "toy-b_0000"


def test_study_show_prints_each_parts_objective(toy, capsys):
    assert main(["show", str(toy)]) == 0
    out = capsys.readouterr().out
    assert "toy: 6 complete, 1 fail; objective val_loss (min)" in out
    assert "toy-b: 1 complete, 1 fail; objective val_loss (min)" in out
    assert "chosen toy_" in out and "its test numbers: test_loss" in out
    assert main(["show", str(toy), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parts"]["toy"]["metric"] == "val_loss" and len(info["parts"]["toy"]["top"]) == 5
    assert {"width", "lr"} <= set(info["parts"]["toy"]["top"][0])


def test_show_and_export_import_neither_torch_nor_ray(tmp_path):
    """`study show` on the homework parts and a plugin part reads the store only: no model library, no Ray."""
    build_store(tmp_path, knobs=FixtureKnobs(toy_trials=3))
    (tmp_path / STUDY_STATE).write_text(json.dumps({"name": "homework-test"}))
    code = (f"import sys, time; from study.cli import main; t = time.monotonic(); "
            f"assert main(['show', {str(tmp_path)!r}]) == 0; "
            f"assert main(['export', {str(tmp_path)!r}, '--to', {str(tmp_path / 'out')!r}]) == 0; "
            "print('wall', time.monotonic() - t); "
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, [m for m in ('torch', 'ray') if m in sys.modules]")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "objective val_acc (max)" in proc.stdout and "objective val_loss (min)" in proc.stdout
    assert (tmp_path / "out" / "trials.csv").read_text().count("\ntoy,toy_") == 4  # 3 trials and the failed one
