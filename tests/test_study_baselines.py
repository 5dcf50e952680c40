"""A study's baseline runs: one set per data setting its trials used, logged once, under the study's parent run."""
from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from covid_fixture import write_data_dir
from data.sequence_data import load_source
from study import tracking
from study.baselines import log_baselines
from trainables.registry import BASELINE_TAG, PARENT_TAG
from trainables.common import flat_config
from trainables.sequence import SequenceConfig


def _trial(client, info, **config):
    cfg = flat_config(SequenceConfig.from_dict(config))
    run = client.create_run(info.experiment_id, tags={PARENT_TAG: info.parent_run_id, "trainable": "covid"})
    for k, v in cfg.items():
        client.log_param(run.info.run_id, k, v if isinstance(v, str) else json.dumps(v))


def test_baselines_are_logged_once_per_data_setting(tmp_path):
    root = write_data_dir(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    info = tracking.start_study(uri, "s", {"study.kind": "covid"})
    client = MlflowClient(uri)
    base = dict(data_dir=str(root), threshold=0.9, date_range="full")
    _trial(client, info, seq_len=3, cell="gru", **base)
    _trial(client, info, seq_len=3, cell="lstm", features="relative", norm="none", **base)  # same windows
    _trial(client, info, seq_len=7, cell="gru", **base)
    settings, runs = log_baselines(info, load_source(str(root), "full"))
    assert settings == 2
    found = client.search_runs([info.experiment_id], f"tags.`{BASELINE_TAG}` != ''")
    assert len(found) == runs
    by = {(r.data.tags[BASELINE_TAG], r.data.params["split"], r.data.params["seq_len"]) for r in found}
    assert ("weekly", "time", "7") in by and ("weekly", "time", "3") not in by  # L=3 has no week before
    assert {("majority", s, L) for s in ("random", "time") for L in ("3", "7")} <= by
    assert {("boosted_trees", "time", "3"), ("logistic", "random", "7")} <= by
    for r in found:
        assert r.data.tags[PARENT_TAG] == info.parent_run_id and r.data.tags["trainable"] == "baseline"
        assert {"train_acc", "val_acc", "test_acc"} <= set(r.data.metrics) and r.info.status == "FINISHED"
        assert r.data.params["trained_split"] == "random" and r.data.params["date_range"] == "full"
    assert log_baselines(info, load_source(str(root), "full")) == (0, 0)  # a resumed study adds nothing
