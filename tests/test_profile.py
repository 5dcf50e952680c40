"""`study show --profile`: the time breakdown of a study, checked to the millisecond on a hand-built folder.

The folder is what `study run` leaves (study.json, summary.json, an MLflow sqlite store with a parent run and
trial runs tagged as study.tracking / study.trial tag them, per-epoch metrics at step = epoch and a summary.json
artefact under results/), with times chosen so every sum and overhead is known exactly.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from data.errors import DataError
from study.cli import build_parser, main
from study.profile import format_profile, profile, read_summaries
from trainables.names import (ARTIFACTS, COMMIT_TAG, DATA_HASH_TAG, GROUP_TAG, KIND_TAG, MLFLOW_DB, NODE_TAG,
                                 OPTUNA_DB, PARENT_TAG, RUN_RESULTS, STOPPED_TAG, STORAGE_TAG, STUDY_STATE, SUMMARY,
                                 SUMMARY_FILE, TRAINABLE_TAG, TRIAL_TAG)

NAME = "prof"
T0 = 1_700_000_000_000  # ms
# trial id -> part, group, status, start offset s, wall s, {metric: per-epoch values}, run summary or None
TRIALS = {
    "aaaa0001": ("covid", "fixed", "FINISHED", 0, 20.0, {"epoch_time_s": [2.0, 3.0, 4.0]}, {"end_time_s": 1.5}),
    "bbbb0002": ("covid", "search", "FINISHED", 5, 10.0,
                 {"epoch_time_s": [1.0, 1.5], "eval_time_s": [0.25, 0.25]}, None),
    "dddd0004": ("covid", "search", "FAILED", 2, 4.0, {"epoch_time_s": [1.0]}, None),
    "cccc0003": ("vae", "fixed", "FINISHED", 40, 30.0, {"epoch_time_s": [5.0, 5.0], "eval_time_s": [1.0, 1.0]},
                 {"iw_time_s": 2.0, "test_neg_elbo": 900.0}),
}
SUMMARIES = [
    {"trainable": "covid", "trials": 3, "planned": 3, "errored": 1, "wall_s": 40.0, "trial_train_s": 14.0,
     "concurrent": 2, "overhead_per_trial_s": 22.0, "complete": True},
    {"trainable": "vae", "trials": 1, "planned": 1, "errored": 0, "wall_s": 35.0, "trial_train_s": 12.0,
     "concurrent": 1, "overhead_per_trial_s": 23.0, "complete": True},
]


def _trial(client: MlflowClient, exp_id: str, parent_id: str, trial_id: str) -> None:
    part, group, status, offset, wall, history, summary = TRIALS[trial_id]
    start = T0 + offset * 1000
    run = client.create_run(exp_id, start_time=start, run_name=trial_id, tags={
        PARENT_TAG: parent_id, TRIAL_TAG: trial_id, COMMIT_TAG: "0123abc", TRAINABLE_TAG: part, GROUP_TAG: group,
        DATA_HASH_TAG: "feedbeef", NODE_TAG: "node0"})
    rid = run.info.run_id
    metrics = [Metric(k, v, start + step * 100, step) for k, values in history.items()
               for step, v in enumerate(values, start=1)]
    metrics.append(Metric("val_acc" if part == "covid" else "test_neg_elbo", 0.5, start, 1))
    client.log_batch(rid, metrics=metrics, params=[Param("epochs", "3")])
    if trial_id == "bbbb0002":  # a resumed trial re-logs epoch 2: the later value is the one that counts
        client.log_batch(rid, metrics=[Metric("epoch_time_s", 2.0, start + 5000, 2)])
        client.set_tag(rid, STOPPED_TAG, "scheduler stopped it after 2 of 3 epochs")
    if summary is not None:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / SUMMARY).write_text(json.dumps(summary))
            client.log_artifacts(rid, tmp, artifact_path=RUN_RESULTS)
    client.set_terminated(rid, status, end_time=int(start + wall * 1000))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """STORAGE/prof: the study folder `study run` would leave, times chosen by hand."""
    study_dir = tmp_path_factory.mktemp("storage") / NAME
    study_dir.mkdir()
    uri = f"sqlite:///{study_dir / MLFLOW_DB}"
    client = MlflowClient(uri)
    exp_id = client.create_experiment(NAME, artifact_location=(study_dir / ARTIFACTS).as_uri())
    parent = client.create_run(exp_id, start_time=T0 - 5000, run_name=NAME,
                               tags={KIND_TAG: "homework", STORAGE_TAG: str(study_dir)})
    for trial_id in TRIALS:
        _trial(client, exp_id, parent.info.run_id, trial_id)
    client.set_terminated(parent.info.run_id, "FINISHED", end_time=T0 + 80_000)
    (study_dir / STUDY_STATE).write_text(json.dumps({
        "target": "homework", "preset": "homework", "name": NAME, "study_dir": str(study_dir), "mlflow_uri": uri,
        "experiment_id": exp_id, "parent_run_id": parent.info.run_id, "done": ["covid", "vae"]}))
    (study_dir / SUMMARY_FILE).write_text(json.dumps(SUMMARIES, indent=2))
    _optuna_storage(study_dir)
    return study_dir


def _optuna_storage(folder: Path) -> None:
    """The (empty) Optuna storage a folder with study.json has: `study run` makes it before study.json."""
    import optuna

    optuna.storages.RDBStorage(f"sqlite:///{folder / OPTUNA_DB}")


@pytest.fixture(scope="module")
def parts(folder: Path) -> dict:
    from analysis import open_study

    return {p["part"]: p for p in profile(open_study(folder))}


def test_trial_seconds_and_overheads_are_exact(parts):
    covid = parts["covid"]
    assert [r["trial_id"] for r in covid["trial_rows"]] == ["aaaa0001", "dddd0004", "bbbb0002"]  # by start
    rows = {r["trial_id"]: r for r in covid["trial_rows"]}
    a, b, d = rows["aaaa0001"], rows["bbbb0002"], rows["dddd0004"]
    assert (a["epochs"], a["train_s"], a["eval_s"], a["end_s"], a["wall_s"]) == (3, 9.0, 0.0, 1.5, 20.0)
    assert a["overhead_s"] == pytest.approx(9.5)
    # re-logged epoch 2 counts once, at its latest value; pruned: no summary, no end-of-run
    assert (b["epochs"], b["train_s"], b["eval_s"], b["end_s"], b["wall_s"]) == (2, 3.0, 0.5, 0.0, 10.0)
    assert b["overhead_s"] == pytest.approx(6.5) and b["state"] == "PRUNED"
    assert (d["state"], d["epochs"], d["train_s"], d["overhead_s"]) == ("FAIL", 1, 1.0, 3.0)  # failed: read here
    assert a["train_pct"] == pytest.approx(100 * 9.0 / 80) and a["wall_pct"] == pytest.approx(25.0)
    vae = parts["vae"]["trial_rows"][0]
    assert (vae["train_s"], vae["eval_s"], vae["end_s"], vae["overhead_s"]) == (10.0, 2.0, 2.0, 16.0)  # iw_time_s


def test_part_totals_add_up_to_the_budget(parts):
    covid, vae = parts["covid"], parts["vae"]
    assert (covid["wall_s"], covid["concurrent"], covid["budget_s"]) == (40.0, 2, 80.0)
    assert (covid["trials"], covid["runs"]) == (3, 3)
    t = covid["total"]
    assert (t["epochs"], t["train_s"], t["eval_s"], t["end_s"], t["wall_s"]) == (6, 13.0, 0.5, 1.5, 34.0)
    assert t["trial_overhead_s"] == pytest.approx(19.0) and t["study_overhead_s"] == pytest.approx(46.0)
    assert t["study_overhead_pct"] == pytest.approx(57.5)
    for p in (covid, vae):
        t = p["total"]
        pieces = ("train", "eval", "end", "trial_overhead", "study_overhead")
        assert sum(t[f"{k}_s"] for k in pieces) == pytest.approx(p["budget_s"])
        assert sum(t[f"{k}_pct"] for k in pieces) == pytest.approx(100, abs=0.03)
    assert vae["total"]["study_overhead_s"] == pytest.approx(5.0) and vae["notes"] == []
    assert covid["notes"] == []  # one covid trial logged eval_time_s: no "evaluation inside training" note


def test_the_printed_table(parts):
    text = format_profile(list(parts.values()))
    assert "covid: 3 trials (3 ended runs), wall 40.0 s x 2 at once = 80.0 slot-s" in text
    assert ("covid total: 6 epochs; training 13.0 s (16.2%), evaluation 0.5 s (0.6%), end-of-run 1.5 s (1.9%), "
            "trial overhead 19.0 s (23.8%), study overhead 46.0 s (57.5%)") in text
    assert len(text.splitlines()) == 2 * 3 + 4  # per part: head, column names, trials, total


def test_cli_json_is_the_profile(folder, parts, capsys):
    assert main(["show", "--storage", str(folder.parent), "--name", NAME, "--profile", "--json"]) == 0
    printed = {p["part"]: p for p in json.loads(capsys.readouterr().out)}
    assert printed == json.loads(json.dumps(parts))


def test_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["show", str(tmp_path / "nope"), "--profile"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("study: error: ") and "no study folder" in err[0]


def test_a_folder_without_summary(tmp_path):
    with pytest.raises(DataError, match="no part has finished yet"):
        read_summaries(tmp_path)


def test_run_takes_the_flag():
    assert build_parser().parse_args(["run", "covid", "--profile"]).profile is True
    assert build_parser().parse_args(["run", "covid"]).profile is False


def test_after_a_run(folder, tmp_path, capsys):
    """`study run --profile` prints the same table; a folder it cannot read costs a line, not the exit code."""
    from study.profile import print_after_run

    print_after_run(folder)
    assert "covid total: 6 epochs; training 13.0 s (16.2%)" in capsys.readouterr().out
    (tmp_path / STUDY_STATE).write_text(json.dumps({"name": NAME, "mlflow_uri": f"sqlite:///{folder / MLFLOW_DB}"}))
    _optuna_storage(tmp_path)
    print_after_run(tmp_path)
    out = capsys.readouterr().out.strip()
    assert out.startswith("study: no profile: ") and "no part has finished yet" in out and len(out.splitlines()) == 1
