"""A study's baseline runs: one set per data setting its trials used, logged once, under the study's parent run."""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from covid_fixture import write_data_dir
from data.sequence_data import load_source
from study import tracking
from study.baselines import log_baselines
from study.studyfile import Part
from trainables.names import BASELINE_TAG, PARENT_TAG, PART_TAG


def test_baselines_are_logged_once_per_data_setting(tmp_path):
    root = write_data_dir(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    info = tracking.start_study(uri, "s", {"study.kind": "covid"})
    client = MlflowClient(uri)
    base = dict(data_dir=str(root), threshold=0.9, date_range="full")
    # The configs the trials ran with, as the driver has them from Tune (a study's `group` key included).
    configs = [dict(seq_len=3, cell="gru", group="fixed", **base),
               dict(seq_len=3, cell="lstm", features="relative", norm="none", **base),  # the same windows
               dict(seq_len=7, cell="gru", **base)]
    part = Part(trainable="covid", constants={}, space={}, fixed=configs)
    settings, runs = log_baselines(info, part, configs, load_source(str(root), "full"))
    assert settings == 2
    found = client.search_runs([info.experiment_id], f"tags.`{BASELINE_TAG}` != ''")
    assert len(found) == runs
    by = {(r.data.tags[BASELINE_TAG], r.data.params["split"], r.data.params["seq_len"]) for r in found}
    assert ("weekly", "time", "7") in by and ("weekly", "time", "3") not in by  # L=3 has no week before
    assert {("majority", s, L) for s in ("random", "time") for L in ("3", "7")} <= by
    assert {("boosted_trees", "time", "3"), ("logistic", "random", "7")} <= by
    for r in found:
        assert r.data.tags[PARENT_TAG] == info.parent_run_id and r.data.tags["trainable"] == "baseline"
        assert r.data.tags[PART_TAG] == "covid"
        assert {"train_acc", "val_acc", "test_acc"} <= set(r.data.metrics) and r.info.status == "FINISHED"
        assert r.data.params["trained_split"] == "random" and r.data.params["date_range"] == "full"
    # a resumed study adds nothing
    assert log_baselines(info, part, configs, load_source(str(root), "full")) == (0, 0)
