"""`study show` / `study export` on what is not a study: one line, exit 2, within seconds."""
from __future__ import annotations

import time

from study.cli import main


def test_missing_study_folder_or_name(tmp_path, capsys):
    assert main(["show", str(tmp_path / "nope")]) == 2
    assert main(["export", "nope", "--storage", str(tmp_path), "--to", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("study: error: ") and "no study folder" in line for line in err)
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_study(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert main(["show", str(tmp_path / "plain")]) == 2
    assert "not a study folder" in capsys.readouterr().err


def test_an_mlflow_uri_that_does_not_answer(capsys):
    started = time.monotonic()
    assert main(["show", "s", "--mlflow-uri", "http://127.0.0.1:1"]) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no MLflow server answers there" in err


def test_a_part_with_nothing_reported_yet_shows_its_counts():
    """Trials that started but reported no epoch have no objective column yet: the counts, no ranking."""
    import pandas as pd

    from study.cmd_show import summary

    class Running:
        name = "s"
        trials = pd.DataFrame([{"part": "toy", "trial_id": "t1", "group": "fixed", "state": "RUNNING",
                                "chosen": False, "width": 4}])

        def objective(self, part):
            return "val_loss", "min"

        def config_keys(self, part):
            return ["width"]

    info = summary(Running(), top=5)["parts"]["toy"]
    assert info["states"] == {"RUNNING": 1} and info["top"] == [] and info["metric"] == "val_loss"
