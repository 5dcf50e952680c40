"""A trial's model in MLflow: one LoggedModel per trial that ended by itself (none for one ASHA stopped), the chosen
trial's model registered as `<study>-<part>` with the alias `chosen`, loaded by `mlflow.pyfunc` (through the
installed loader module `trainables.pyfunc`, nothing pickled) in a fresh process and by `mlflow models predict`.

A made-up trainable with a model (a JSON file, no torch) in one small study: a fixed run that is good and a searched
one that is bad, one at a time, so ASHA stops the searched one at its first rung.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from study import logged_model, tracking
from study.spec import load_spec
from trainables import ModelSpec, Trainable
from trainables.names import CHOSEN, MODEL_ID_TAG, STOPPED_TAG, TRIAL_TAG, embedded_uri, registered_model

ROOT = Path(__file__).resolve().parents[1]
NAME, PART = "lm", "toy"
MODEL = f"{NAME}-{PART}"

TOY_MODEL = '''
"""A made-up trainable with a model: its end-of-run file is the model (a JSON scale), no torch."""
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from trainables import ModelSpec, Trainable


@dataclass
class ToyConfig:
    width: int = 8
    lr: float = 0.01
    epochs: int = 3


def train(config, report, artifact_dir=None, **context):
    for epoch in range(1, config.epochs + 1):
        loss = (config.lr - 0.03) ** 2 + 1.0 / (epoch * config.width)
        report({"epoch": epoch, "val_loss": loss, "test_loss": 1.1 * loss})
    Path(artifact_dir).mkdir(parents=True, exist_ok=True)
    (Path(artifact_dir) / "scale.json").write_text(json.dumps({"scale": config.width * config.lr}))


def load(folder, device):
    return json.loads((Path(folder) / "scale.json").read_text())


def predict(model, inputs):
    return pd.DataFrame({"score": pd.DataFrame(inputs).sum(axis=1) * model["scale"]})


TRAINABLE = Trainable(name="toy", config=ToyConfig, train=train, metric="val_loss", mode="min",
                      artifacts=("scale.json",),
                      model=ModelSpec(files=("scale.json",), load=load, predict=predict,
                                      describe="any numeric columns"))
'''

# The fixed run is good; the searched one (lr far from 0.03, width 1-2) is worse at epoch 1, so ASHA stops it there.
STUDY = '''
[[part]]
trainable = "toy_model:TRAINABLE"
num_samples = 1
scheduler = "asha"
fixed = [ { width = 16, lr = 0.03 } ]

[part.constants]
epochs = 3

[part.space]
width = { int = [1, 2] }
lr = { float = [0.5, 0.9] }
'''
INPUT = pd.DataFrame({"a": [1.0, 2.0, -1.0], "b": [0.5, 0.25, 0.0]})
INPUT_JSON = json.dumps(INPUT.to_dict(orient="list"))


def write_project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy_model.py").write_text(TOY_MODEL)
    (folder / "toy-study.toml").write_text(STUDY)
    return folder / "toy-study.toml"


def run_study(path: Path, storage: Path, *extra: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "study", "run", str(path), "--storage", str(storage), "--name", NAME,
                           "--max-concurrent", "1", *extra], cwd=cwd, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def fresh(code: str, *args: str, env: dict[str, str], cwd: Path) -> str:
    """`code` in a fresh Python process: only the installed project (and the plugin's folder on PYTHONPATH)."""
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("logged")
    project = write_project(base / "project")
    out = run_study(project, base / "studies", cwd=base)
    folder = base / "studies" / NAME
    client = MlflowClient(embedded_uri(folder))
    spec = load_spec(folder)
    runs = client.search_runs([spec.experiment_id], f"tags.trainable = '{PART}'", max_results=100)
    path = os.pathsep.join([str(base / "project"), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {"base": base, "folder": folder, "client": client, "spec": spec, "runs": runs, "out": out,
            "env": {"PYTHONPATH": path}}


def test_one_logged_model_per_trial_that_ended_by_itself_with_its_final_metrics(toy):
    client, runs = toy["client"], toy["runs"]
    stopped = [r for r in runs if STOPPED_TAG in r.data.tags]
    ended = [r for r in runs if STOPPED_TAG not in r.data.tags]
    assert len(runs) == 2 and len(stopped) == 1 and len(ended) == 1, [r.data.tags for r in runs]
    models = client.search_logged_models([toy["spec"].experiment_id])
    assert sorted(m.source_run_id for m in models) == sorted(r.info.run_id for r in ended)
    for model in models:
        run = client.get_run(model.source_run_id)
        assert str(model.status) in ("READY", "LoggedModelStatus.READY") and model.model_type == PART
        assert {m.key: m.value for m in model.metrics} == run.data.metrics
        assert model.params["width"] == run.data.params["width"] and model.tags[TRIAL_TAG] == run.data.tags[TRIAL_TAG]
        # linked with the run's own points: no second point at the last step
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == [1, 2, 3], steps
        assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    # ranked by a metric, as the Models tab ranks them
    ranked = client.search_logged_models([toy["spec"].experiment_id],
                                         order_by=[{"field_name": "metrics.val_loss", "ascending": True}])
    assert [m.model_id for m in ranked] == [m.model_id for m in models]


def test_the_chosen_trials_model_is_registered_with_the_alias_chosen(toy):
    client = toy["client"]
    best = min((r for r in toy["runs"]), key=lambda r: r.data.metrics["val_loss"])
    version = client.get_model_version_by_alias(MODEL, CHOSEN)
    assert version.run_id == best.info.run_id and int(version.version) == 1
    model = client.get_logged_model(version.tags[MODEL_ID_TAG])
    assert model.source_run_id == best.info.run_id
    assert f"its model: models:/{MODEL}@{CHOSEN} (version 1)" in toy["out"]
    summary = json.loads((toy["folder"] / "summary.json").read_text())[0]
    assert summary["registered"] == {"name": MODEL, "version": 1, "model_id": model.model_id,
                                     "run_id": best.info.run_id}


LOAD = '''
import json, sys, mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
print(json.dumps(model.predict(pd.DataFrame(json.loads(sys.argv[2]))).to_dict(orient="list")))
raw = model.get_raw_model()
print(type(raw.config).__name__, raw.config.width, raw.trainable)
print("loaded modules:", *sorted({"torch", "ray"} & set(sys.modules)))
'''


def chosen_scale(toy) -> float:
    version = toy["client"].get_model_version_by_alias(MODEL, CHOSEN)
    params = toy["client"].get_run(version.run_id).data.params
    return int(params["width"]) * float(params["lr"])


def test_pyfunc_loads_the_chosen_model_in_a_fresh_process_and_predicts(toy):
    env = {**toy["env"], "MLFLOW_TRACKING_URI": embedded_uri(toy["folder"])}
    out = fresh(LOAD, f"models:/{MODEL}@{CHOSEN}", INPUT_JSON, env=env, cwd=toy["base"]).splitlines()
    assert json.loads(out[0])["score"] == pytest.approx(list(INPUT.sum(axis=1) * chosen_scale(toy))), out
    assert out[1] == "ToyConfig 16 toy_model:TRAINABLE", out
    assert out[2] == "loaded modules:", out  # nothing of the training stack


def test_mlflow_models_predict_on_the_command_line(toy):
    (toy["base"] / "in.csv").write_text(INPUT.to_csv(index=False))
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    env = {**os.environ, **toy["env"], "MLFLOW_TRACKING_URI": embedded_uri(toy["folder"])}
    proc = subprocess.run([mlflow_bin, "models", "predict", "-m", f"models:/{MODEL}@{CHOSEN}", "-i", "in.csv",
                           "-t", "csv", "--env-manager", "local"], cwd=toy["base"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])["predictions"]
    assert [row["score"] for row in found] == pytest.approx(list(INPUT.sum(axis=1) * chosen_scale(toy)))


def test_a_moved_folder_loads_its_model_from_its_own_files(toy, tmp_path):
    """MLflow records the model's files absolutely: on a moved folder `models:/` names the folder where it was
    (gone here), so the model's local folder is what loads; it predicts as the original did."""
    folder = toy["folder"]
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(folder, moved, symlinks=True)
    away = folder.with_name(folder.name + "-away")
    folder.rename(away)  # the original is gone while the moved copy is read
    try:
        version = MlflowClient(embedded_uri(moved)).get_model_version_by_alias(MODEL, CHOSEN)
        local = moved / "artifacts" / "models" / version.tags[MODEL_ID_TAG] / "artifacts"
        out = fresh(LOAD, str(local), INPUT_JSON, env=toy["env"], cwd=tmp_path).splitlines()
        assert json.loads(out[0])["score"] == pytest.approx(list(INPUT.sum(axis=1) * chosen_scale(toy)))
        env = {**toy["env"], "MLFLOW_TRACKING_URI": embedded_uri(moved)}
        proc = subprocess.run([sys.executable, "-c", LOAD, f"models:/{MODEL}@{CHOSEN}", INPUT_JSON], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, env={**os.environ, **env})
        assert proc.returncode != 0 and "No such artifact" in proc.stderr, proc.stderr[-2000:]
    finally:
        away.rename(folder)


def test_registering_again_adds_a_version_and_moves_the_alias(toy, tmp_path):
    """What a resumed or repeated study does at the end of a part (here on a copy of the folder, which registers the
    files where the copy lies): version 2, `chosen` on it, version 1 kept as it was."""
    copy = tmp_path / "copy" / NAME
    shutil.copytree(toy["folder"], copy, symlinks=True)
    spec = toy["spec"]
    info = tracking.with_artifacts(tracking.TrackingInfo(embedded_uri(copy), spec.experiment_id, spec.parent_run_id,
                                                         spec.git_commit or "unknown"), copy)
    client = MlflowClient(info.uri)
    first = client.get_model_version_by_alias(MODEL, CHOSEN)
    trial = client.get_run(first.run_id).data.tags[TRIAL_TAG]
    found = logged_model.register_chosen(info, NAME, PART, trial)
    assert found["version"] == 2 and found["run_id"] == first.run_id
    now = client.get_model_version_by_alias(MODEL, CHOSEN)
    assert int(now.version) == 2 and now.source.startswith(copy.resolve().as_uri())
    assert client.get_model_version(MODEL, "1").source == first.source  # never overwritten
    # a trial without a logged model (the stopped one) registers nothing
    stopped = next(r for r in toy["runs"] if STOPPED_TAG in r.data.tags)
    assert logged_model.register_chosen(info, NAME, PART, stopped.data.tags[TRIAL_TAG]) is None


# ------------------------------------------------------------------------------------------------- no study needed
def _toy(model: ModelSpec | None, artifacts: tuple[str, ...] = ()) -> Trainable:
    from dataclasses import dataclass

    @dataclass
    class Config:
        epochs: int = 1

    return Trainable(name="t", config=Config, train=lambda config, report, **context: None, metric="m",
                     artifacts=artifacts, model=model)


def test_a_model_file_train_did_not_write_fails_the_trial_in_one_line(tmp_path):
    plugin = _toy(ModelSpec(files=("w.json",), load=lambda folder, device: None, predict=lambda m, x: x),
                  artifacts=("w.json",))
    with pytest.raises(logged_model.ModelFilesMissing, match=r"train wrote no 'w.json' into artifact_dir"):
        logged_model.check_files(plugin, tmp_path)
    (tmp_path / "w.json").write_text("{}")
    logged_model.check_files(plugin, tmp_path)


def test_a_trainable_without_a_model_logs_none(tmp_path):
    uri = embedded_uri(tmp_path)
    info = tracking.start_study(uri, "s", {}, artifact_location=(tmp_path / "artifacts").as_uri())
    client = MlflowClient(uri)
    run = client.create_run(info.experiment_id)
    assert logged_model.log_trial_model(info, run.info.run_id, _toy(None), "t", "t", "x", {}, tmp_path) is None
    assert list(client.search_logged_models([info.experiment_id])) == []
    logged_model.check_files(_toy(None), tmp_path)  # nothing to check


def test_the_loader_module_imports_neither_mlflow_nor_torch():
    code = ("import sys, trainables.pyfunc; "
            "print(sorted({'mlflow', 'torch', 'ray', 'study'} & {m.split('.')[0] for m in sys.modules}))")
    assert fresh(code, env={}, cwd=ROOT).strip() == "[]"


def test_model_names_follow_the_one_rule():
    assert registered_model("s", "covid") == "s-covid" and CHOSEN == "chosen"
    assert logged_model.model_name("a.b", "1/2") == "a-b-1-2"


# ------------------------------------------------------------------------------------------------- a tracking server
from test_mlflow_server import mlflow_server  # noqa: E402,F401  (the fixture: a real `mlflow server`, its own store)


@pytest.mark.slow
def test_on_a_tracking_server_a_repeated_study_adds_a_version(mlflow_server, tmp_path):
    """The same study twice against one server (the files go through its proxied artefact store): a logged model
    per trial that ended by itself each time, `<study>-<part>` at version 2 with `chosen` on it, version 1 kept,
    and the chosen model loads from the server in a fresh process."""
    base, _ = mlflow_server
    project = write_project(tmp_path / "project")
    for storage in ("first", "second"):
        out = run_study(project, tmp_path / storage, "--mlflow-uri", base, cwd=tmp_path)
        assert not (tmp_path / storage / NAME / "mlflow.db").exists()
    assert f"its model: models:/{MODEL}@{CHOSEN} (version 2)" in out, out
    client = MlflowClient(base)
    exp = client.get_experiment_by_name(NAME)
    runs = client.search_runs([exp.experiment_id], f"tags.trainable = '{PART}'", max_results=100)
    ended = [r.info.run_id for r in runs if STOPPED_TAG not in r.data.tags]
    assert len(runs) == 4 and len(ended) == 2
    models = client.search_logged_models([exp.experiment_id])
    assert sorted(m.source_run_id for m in models) == sorted(ended)
    assert all(m.artifact_location.startswith("mlflow-artifacts:") for m in models)
    chosen = client.get_model_version_by_alias(MODEL, CHOSEN)
    assert int(chosen.version) == 2 and chosen.run_id in ended
    first = client.get_model_version(MODEL, "1")
    assert first.run_id in ended and first.run_id != chosen.run_id
    env = {**os.environ, "PYTHONPATH": str(project.parent), "MLFLOW_TRACKING_URI": base}
    out = fresh(LOAD, f"models:/{MODEL}@{CHOSEN}", INPUT_JSON, env=env, cwd=tmp_path).splitlines()
    assert json.loads(out[0])["score"] == pytest.approx(list(INPUT.sum(axis=1) * 16 * 0.03)), out
