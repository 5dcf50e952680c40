"""The README's study file, run as written on the real data: 1 fixed + 6 searched trials, all inside its
space, the file kept in the study folder and on the MLflow parent run, and a report made from it."""
from __future__ import annotations

import re
import tomllib

import optuna
import pytest

from test_study_run import ROOT, store, study

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def readme_study_file() -> str:
    section = (ROOT / "README.md").read_text().split("### Your own study as a file", 1)[1]
    return re.search(r"```toml\n(.*?)```", section, flags=re.S).group(1)


def test_readme_study_file_runs_and_reports(real_data_dir, tmp_path):
    text = readme_study_file()
    path = tmp_path / "my-study.toml"
    path.write_text(text)
    spec = tomllib.loads(text)
    name, part = spec["name"], spec["part"][0]
    storage = tmp_path / "studies"
    study("run", str(path), "--storage", str(storage), "--data-dir", str(real_data_dir), timeout=1500)
    study_dir = storage / name

    trials = optuna.load_study(study_name="covid", storage=f"sqlite:///{study_dir / 'optuna.db'}").trials
    assert len(trials) == 1 + part["num_samples"]
    assert {k: trials[0].params[k] for k in part["fixed"][0]} == part["fixed"][0]
    for t in trials:
        assert t.state.name in ("COMPLETE", "PRUNED") and set(t.params) == set(part["space"])
        for key, spec_ in part["space"].items():
            value = t.params[key]
            if "choices" in spec_:
                assert value in spec_["choices"]
            else:
                lo, hi = spec_.get("int") or spec_.get("float")
                assert lo <= value <= hi

    client, parent, children = store(study_dir)
    assert len(children) == 1 + part["num_samples"]
    assert all(r.data.params["split"] == '"time"' or r.data.params["split"] == "time" for r in children)
    kept = (study_dir / "study.toml").read_text()
    assert tomllib.loads(kept)["part"][0]["space"] == part["space"]
    assert client.download_artifacts(parent.info.run_id, "study.toml", str(tmp_path)).endswith("study.toml")

    study("report", "--storage", str(storage), "--name", name, timeout=600)
    html = (study_dir / "report" / "index.html").read_text()
    assert "Accuracy" in html or "accuracy" in html
