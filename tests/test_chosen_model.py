"""The chosen model, ready to use: `open_study(DIR).model(part)` and `study predict`, on a real study.

One study serves the module: the built-in covid and vae parts on the synthetic data of tests/covid_fixture.py
(as tests/test_smoke_synthetic.py builds it), and two toy plugin parts beside the study file, one declaring its
model (`Trainable.model`) and one not; run as a user runs it (`python -m study run`, its own process), about a
minute on 2 cores. What is checked: the covid model gives back the chosen trial's logged test accuracy from the
test windows the data layer builds (to 1e-6) and the trial's predictions.json per country; the VAE's grid is a
PNG of 16 faces; a plugin's declared model predicts from a CSV; one without a declaration, a bad input file and an
unknown country are one line, exit 2; a moved copy of the study folder loads and predicts the same; reading
writes nothing in the folder; `study predict --help` imports none of torch, Ray, MLflow, Optuna.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from covid_fixture import WAVE_COUNTRIES, snapshot, wave_csv, write_data_dir, write_faces_zip

ROOT = Path(__file__).resolve().parents[1]
NAME = "models"

TOYS = '''
"""Two made-up trainables, no torch: one declares its model (a JSON file of weights), one does not."""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainables import ModelSpec, Trainable


@dataclass
class ToyConfig:
    width: int = 8
    epochs: int = 2


def train(config, report, artifact_dir=None, **context):
    for epoch in range(1, config.epochs + 1):
        report({"epoch": epoch, "val_loss": 1.0 / (epoch * config.width), "test_loss": 1.1 / (epoch * config.width)})
    if artifact_dir is not None:
        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        (Path(artifact_dir) / "weights.json").write_text(json.dumps({"scale": config.width}))


def load(folder, device):
    return json.loads((Path(folder) / "weights.json").read_text())


def predict(model, inputs):
    x = np.asarray(inputs, dtype=float)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"shape {x.shape}: expected (N, 2)")
    return pd.DataFrame({"y": model["scale"] * x.sum(1)})


WITH_MODEL = Trainable(name="toy", config=ToyConfig, train=train, metric="val_loss", mode="min",
                       artifacts=("weights.json",),
                       model=ModelSpec(files=("weights.json",), load=load, predict=predict, describe="(N, 2) numbers"))
PLAIN = Trainable(name="plain", config=ToyConfig, train=train, metric="val_loss", mode="min")
'''

STUDY_FILE = f'''name = "{NAME}"

[[part]]
trainable = "covid"
num_samples = 0
scheduler = "none"
fixed = [
  {{ cell = "gru", seq_len = 4, hidden_size = 8, lr = 0.01 }},
  {{ cell = "lstm", seq_len = 6, hidden_size = 8, lr = 0.01, features = "relative+weekday" }},
]

[part.constants]
epochs = 2
batch_size = 64
date_range = "homework"
split = "random"
seeds = 2

[[part]]
trainable = "vae"
num_samples = 0
scheduler = "none"
fixed = [ {{ kl_weight = 1.0 }} ]

[part.constants]
epochs = 1
batch_size = 32
image_size = 16
max_images = 64
latent_dim = 4
iw_samples = 0

[[part]]
trainable = "toys:WITH_MODEL"
num_samples = 0
scheduler = "none"
fixed = [ {{ width = 3 }}, {{ width = 5 }} ]

[[part]]
trainable = "toys:PLAIN"
num_samples = 0
scheduler = "none"
fixed = [ {{ width = 3 }} ]
'''


@dataclass(frozen=True)
class Done:
    study_dir: Path
    data_dir: Path
    work: Path
    env: dict


def run_study(cwd: Path, env: dict, *args: str, ok: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if ok:
        assert proc.returncode == 0, f"study {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                                     f"{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Done:
    work = tmp_path_factory.mktemp("models")
    data = work / "synthetic-data"  # not "data": a ./data/ folder would shadow the project's `data` package
    write_data_dir(data, csv=wave_csv())
    write_faces_zip(data, n=64)
    project = work / "project"
    project.mkdir()
    (project / "toys.py").write_text(TOYS)
    (project / "study.toml").write_text(STUDY_FILE)
    env = {k: v for k, v in os.environ.items() if k not in ("STUDY_DATA_DIR", "RAY_ADDRESS")}
    env |= {"XDG_CACHE_HOME": str(work / "xdg"), "STUDY_CACHE_DIR": str(work / "cache")}
    run_study(work, env, "run", str(project / "study.toml"), "--storage", "studies", "--data-dir", str(data),
              timeout=900)
    return Done(work / "studies" / NAME, data, work, env)


def predict(done: Done, *args: str, ok: bool = True, study_dir: Path | None = None) -> subprocess.CompletedProcess:
    """`study predict` as a user runs it, its own process."""
    return run_study(done.work, done.env, "predict", str(study_dir or done.study_dir), *args, ok=ok)


def predict_here(capsys, done: Done, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """`study predict` through `study.cli.main` in this process (seconds fewer than a fresh interpreter)."""
    from study.cli import main

    capsys.readouterr()
    code = main(["predict", str(done.study_dir), *args])
    out, err = capsys.readouterr()
    proc = subprocess.CompletedProcess(["study", "predict", *args], code, out, err)
    if ok:
        assert code == 0, (code, out, err)
    return proc


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("study: error: "), proc.stderr
    return lines[0]


def test_the_covid_model_gives_back_each_trials_logged_test_accuracy(done):
    """Per finished trial (the chosen one by default, the other by --trial): the mean over seeds of each main
    model's accuracy on the test windows the data layer builds from the trial's config is its logged test_acc,
    and the seeds' mean probability its test_acc_ens."""
    from analysis import open_study
    from data.sequence_data import build_sequence_data

    study = open_study(done.study_dir)
    chosen = study.chosen("covid")
    model = study.model("covid")
    assert model.trial_id == chosen["trial"].trial_id and model.part == "covid"
    trials = study.trials[study.trials.part == "covid"]
    assert len(trials) == 2
    for _, row in trials.iterrows():
        m = model if row.trial_id == model.trial_id else study.model("covid", trial=row.trial_id)
        assert m.trial_id == row.trial_id and m.config.data.seq_len == row.seq_len
        data = build_sequence_data(m.config.data)
        idx = data.splits[data.split].test
        p = m.probabilities(data.x[idx])  # (seeds, windows)
        assert p.shape == (2, len(idx))
        accuracy = ((p > 0.5) == data.y[idx]).mean(1).mean()
        assert accuracy == pytest.approx(row.test_acc, abs=1e-6), row.trial_id
        table = m.predict(data.x[idx])
        ens = ((table.p_increase.to_numpy() > 0.5) == data.y[idx]).mean()
        assert ens == pytest.approx(row.test_acc_ens, abs=1e-6), row.trial_id
        # the same windows as a table of L*F columns
        flat = pd.DataFrame(data.x[idx].reshape(len(idx), -1),
                            columns=[f"t{t}_f{f}" for t in range(data.x.shape[1]) for f in range(data.x.shape[2])])
        assert np.allclose(m.predict(flat).p_increase, table.p_increase, atol=1e-7)


def test_study_predict_prints_each_countrys_probability_as_the_trial_logged_it(done, tmp_path):
    from analysis import open_study

    before = snapshot(done.study_dir)
    out = tmp_path / "p.csv"
    proc = predict(done, "--part", "covid", "--countries", "Algeria,Chile", "--to", str(out))
    lines = proc.stdout.strip().splitlines()
    assert "P(increase" in lines[0] and "2020-04-22" in lines[0], proc.stdout
    for country in ("Algeria", "Chile"):
        line = next(ln for ln in lines if ln.strip().startswith(country))
        assert 0 <= float(line.split()[2]) <= 1, line
    chosen = open_study(done.study_dir).results.chosen("covid")
    logged = json.loads(chosen.artifacts["predictions.json"].read_text())
    table = pd.read_csv(out, index_col="country")
    assert list(table.index) == ["Algeria", "Chile"]
    for country in table.index:
        assert table.loc[country, "p_increase"] == pytest.approx(logged["countries"][country]["p_increase"], abs=1e-6)
        assert table.loc[country, "p_increase_std"] == pytest.approx(
            logged["countries"][country]["p_increase_std"], abs=1e-6)
        assert table.loc[country, "date"] == logged["date"]
    # every country of the data, in Python, from the data folder given
    every = open_study(done.study_dir).model("covid").latest(data_dir=str(done.data_dir))
    assert sorted(every.index) == sorted(WAVE_COUNTRIES)
    assert snapshot(done.study_dir) == before  # read-only


def test_an_unknown_country_is_one_line(done, capsys):
    line = one_line_error(predict_here(capsys, done, "--part", "covid", "--countries", "Atlantis", ok=False))
    assert "'Atlantis'" in line and "is not in the data" in line


def test_the_vae_grid_is_a_png_of_16_faces(done, tmp_path, capsys):
    from PIL import Image

    from analysis import open_study

    out = tmp_path / "faces.png"
    proc = predict_here(capsys, done, "--part", "vae", "--samples", "16", "--to", str(out))
    assert "16 samples" in proc.stdout
    grid = np.asarray(Image.open(out).convert("RGB"))
    model = open_study(done.study_dir).model("vae")
    faces = model.sample(16, 0)
    s = model.image_size
    assert faces.shape == (16, 3, s, s) and faces.dtype == np.uint8
    scale = 64 // s
    assert grid.shape == (4 * s * scale, 4 * s * scale, 3)
    for i, face in enumerate(faces):  # tile i of the 4x4 grid is face i, each pixel scaled up
        r, c = divmod(i, 4)
        tile = grid[r * s * scale:(r + 1) * s * scale:scale, c * s * scale:(c + 1) * s * scale:scale]
        assert (tile == face.transpose(1, 2, 0)).all(), i
    assert len({faces[i].tobytes() for i in range(16)}) == 16


def test_the_vae_encodes_a_file_of_images(done, tmp_path, capsys):
    from analysis import open_study

    model = open_study(done.study_dir).model("vae")
    images = np.random.default_rng(1).integers(0, 256, (5, 3, model.image_size, model.image_size), dtype=np.uint8)
    np.save(tmp_path / "faces.npy", images)
    proc = predict_here(capsys, done, "--part", "vae", "--input", str(tmp_path / "faces.npy"))
    table = pd.read_csv(__import__("io").StringIO(proc.stdout))
    assert list(table.columns) == [f"z{i}" for i in range(4)] and len(table) == 5
    assert np.allclose(table.to_numpy(), model.predict(images).to_numpy(), atol=1e-6)
    mu, logvar = model.encode(images)
    assert model.decode(mu).shape == images.shape


def test_a_plugins_declared_model_predicts_and_one_without_is_one_line(done, tmp_path, capsys):
    from analysis import open_study

    study = open_study(done.study_dir)
    toy = study.model("toy")
    assert toy.config.width == 5 and toy.trainable.name == "toy"  # the chosen: the lowest val_loss, 1 / (2 * 5)
    (tmp_path / "in.csv").write_text("a,b\n1,2\n0.5,0.5\n")
    out = tmp_path / "out.csv"
    predict(done, "--part", "toy", "--input", str(tmp_path / "in.csv"), "--to", str(out))
    assert pd.read_csv(out).y.tolist() == pytest.approx([3 * toy.config.width, toy.config.width])
    line = one_line_error(predict_here(capsys, done, "--part", "plain", "--input", str(tmp_path / "in.csv"),
                                       ok=False))
    assert "part plain's trainable plain declares no model (Trainable.model)" in line
    line = one_line_error(predict_here(capsys, done, "--part", "toy", "--samples", "4", "--to",
                                       str(tmp_path / "x.png"), ok=False))
    assert "declares no sampler" in line and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read it"),
    ("a,b\n1,x\n", "column 'b' is not numeric"),
    ("a,b,c\n1,2,3\n", "not an input of part toy's model"),
    ("", "cannot read it as CSV"),
])
def test_a_bad_input_file_is_one_line_naming_it(done, tmp_path, capsys, content, problem):
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_text(content)
    line = one_line_error(predict_here(capsys, done, "--part", "toy", "--input", str(path), ok=False))
    assert str(path) in line and problem in line, line


def test_a_moved_copy_of_the_folder_loads_and_predicts_the_same(done, tmp_path):
    from analysis import open_study

    copy = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(done.study_dir, copy)
    original = open_study(done.study_dir).model("covid")
    moved = open_study(copy).model("covid")
    assert moved.trial_id == original.trial_id
    x = np.random.default_rng(0).normal(size=(7, original.seq_len, original.n_features)).astype(np.float32)
    assert np.array_equal(moved.predict(x).to_numpy(), original.predict(x).to_numpy())
    # the copy's own files were read: the original's model.pt gone does not matter
    found = open_study(copy).results.chosen("covid").artifacts["model.pt"]
    assert found.is_relative_to(copy)
    before = snapshot(copy)
    proc = predict(done, "--part", "covid", "--countries", "Brazil", study_dir=copy)
    assert "Brazil" in proc.stdout and snapshot(copy) == before


def test_study_predict_help_imports_no_heavy_library():
    code = textwrap.dedent("""
        import sys
        from study.cli import main
        try:
            main(["predict", "--help"])
        except SystemExit as stop:
            print("CODE", stop.code, file=sys.stderr)
        print("HEAVY", sorted(m for m in ("torch", "ray", "mlflow", "optuna") if m in sys.modules), file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "CODE 0" in proc.stderr and proc.stderr.strip().splitlines()[-1] == "HEAVY []", proc.stderr
    assert "--countries" in proc.stdout and "--samples" in proc.stdout


def test_a_model_declaration_is_checked_when_the_trainable_is_built():
    from dataclasses import dataclass as dc

    from trainables import ModelSpec, Trainable, TrainableError

    @dc
    class C:
        epochs: int = 1

    def fn(*a):
        return None

    with pytest.raises(TrainableError, match="model: files=\\(\\)"):
        ModelSpec(files=(), load=fn, predict=fn)
    with pytest.raises(TrainableError, match="not a plain file name"):
        ModelSpec(files=("../model.pt",), load=fn, predict=fn)
    with pytest.raises(TrainableError, match="load=.* is not a function"):
        ModelSpec(files=("m.pt",), load="m.pt", predict=fn)
    with pytest.raises(TrainableError, match="'m.pt' are not among artifacts") as err:
        Trainable(name="t", config=C, train=fn, metric="m", model=ModelSpec(files=("m.pt",), load=fn, predict=fn))
    assert err.value.key == "model"
    with pytest.raises(TrainableError, match="is not a ModelSpec"):
        Trainable(name="t", config=C, train=fn, metric="m", model=fn)
    ok = Trainable(name="t", config=C, train=fn, metric="m", artifacts=("m.pt",),
                   model=ModelSpec(files=["m.pt"], load=fn, predict=fn))
    assert ok.model.files == ("m.pt",)


def test_the_readme_and_analysis_snippets_run_on_the_study(done, tmp_path, capsys, monkeypatch):
    """README's analysis script (with this study's countries for the three it names) and docs/ANALYSIS.md's VAE
    samples, as shown, on this study's folder."""
    import re

    readme = (ROOT / "README.md").read_text().split("### Analysis scripts", 1)[1]
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert '["Italy", "Spain", "Germany"]' in code and '"studies/NAME"' in code
    code = code.replace('"studies/NAME"', repr(str(done.study_dir))).replace(
        '["Italy", "Spain", "Germany"]', repr(list(WAVE_COUNTRIES[:3])))
    exec(compile(code, "README", "exec"), {})
    out = capsys.readouterr().out
    assert all(c in out for c in WAVE_COUNTRIES[:3]) and "p_increase" in out
    analysis = (ROOT / "docs" / "ANALYSIS.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", analysis, re.S) if ".sample(16" in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(block.replace('"studies/NAME"', repr(str(done.study_dir))), "ANALYSIS.md", "exec"), {})
    from PIL import Image

    assert Image.open(tmp_path / "faces.png").size == (64, 64)  # 4 x 4 faces of 16 pixels


def test_the_docs_plugin_with_its_model_declared(tmp_path, monkeypatch):
    """docs/TRAINABLES.md's example with the lines its "ready to use" section adds: a valid Trainable whose run
    writes the declared file, loaded and predicting through its declaration."""
    import re

    from trainables.testing import check_trainable

    doc = (ROOT / "docs" / "TRAINABLES.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    base = next(b for b in blocks if re.search(r"^TRAINABLE = ", b, re.M))
    added = next(b for b in blocks if "ModelSpec(" in b and "TRAINABLE = " in b)
    (tmp_path / "my_model_ready.py").write_text(base + "\n\n" + added)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_model_ready

    trainable = my_model_ready.TRAINABLE
    checked = check_trainable(trainable, epochs=2, width=4)
    assert checked.artifacts == ["model.json", "summary.json"]
    trainable.train(trainable.make_config({"width": 4, "lr": 0.02, "epochs": 2}), lambda m: None,
                    artifact_dir=tmp_path / "art")
    model = trainable.model.load(tmp_path / "art", "cpu")
    out = trainable.model.predict(model, pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}))
    assert out.score.tolist() == pytest.approx([4 * 0.02 / 4, 6 * 0.02 / 4])


def test_model_files_not_in_the_folder_are_downloaded_from_the_store(done):
    """Where the run's files are not read in place (a tracking server's runs: weights are not among the downloaded
    artefacts), they are fetched from the store for the moment of loading; the same model either way."""
    from analysis import open_study

    study = open_study(done.study_dir)
    in_place = study.model("covid")
    for run in study.results.runs:
        run.artifacts = {k: v for k, v in run.artifacts.items() if k not in ("model.pt", "weights.json")}
    fetched = study.model("covid")
    x = np.random.default_rng(2).normal(size=(5, in_place.seq_len, in_place.n_features)).astype(np.float32)
    assert np.array_equal(fetched.predict(x).to_numpy(), in_place.predict(x).to_numpy())
    toy = study.model("toy")  # a plugin's own file, likewise
    assert toy.model == {"scale": 5}


def test_a_countrys_own_cumulative_counts_give_the_same_probability(done):
    """windows_from_cumulative: raw cumulative counts over the trial's date range, normalised as the trial's data
    layer does, give latest()'s numbers."""
    from analysis import open_study
    from data.sequence_data import load_source

    model = open_study(done.study_dir).model("covid")
    source = load_source(str(done.data_dir), model.config.data.date_range)
    rows = [source.series.countries.index(c) for c in ("Brazil", "Namibia")]
    x, kept = model.windows_from_cumulative(source.series.cumulative[rows], source.series.dates, ["Brazil", "Namibia"])
    assert kept == ["Brazil", "Namibia"] and x.shape == (2, model.seq_len, model.n_features)
    ours = model.predict(x).p_increase.to_numpy()
    assert np.allclose(ours, model.latest(["Brazil", "Namibia"]).p_increase.to_numpy(), atol=1e-7)


class _Payload:
    """Unpickling this runs `open(path, 'w')`: what a crafted model.pt would do with os.system."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("part", ["covid", "vae", "cnn"])
def test_a_model_file_holding_code_is_refused_by_every_declared_loader(tmp_path, part):
    """Every built-in declaration and the example plugin's load weights only: a crafted model.pt is refused in
    one line naming the file, and its code never runs."""
    import torch

    from trainables import registry

    trainable = registry.find("cnn:TRAINABLE", ROOT / "examples" / "cnn").trainable if part == "cnn" \
        else registry.get(part)
    marker = tmp_path / "payload-ran"
    torch.save({"config": {}, "state_dict": {}, "seeds": [_Payload(str(marker))]}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="model.pt: refused to load"):
        trainable.model.load(tmp_path, "cpu")
    assert not marker.exists()


def test_the_registered_builtin_models_predict_through_mlflow_pyfunc_in_a_fresh_process(done, tmp_path):
    """`mlflow.pyfunc.load_model("models:/<study>-<part>@chosen")` in a fresh interpreter (only the project
    installed, nothing pickled) predicts what `open_study(...).model(part)` predicts: covid's P(increase) from a
    table of windows, the VAE's latent means from images."""
    from analysis import open_study
    from data.sequence_data import build_sequence_data

    study = open_study(done.study_dir)
    covid, vae = study.model("covid"), study.model("vae")
    data = build_sequence_data(covid.config.data)
    x = data.x[data.splits[data.split].test][:50]
    flat = pd.DataFrame(x.reshape(len(x), -1),
                        columns=[f"t{t}_f{f}" for t in range(x.shape[1]) for f in range(x.shape[2])])
    flat.to_csv(tmp_path / "windows.csv", index=False)
    images = np.random.default_rng(2).integers(0, 256, (4, 3, vae.image_size, vae.image_size), dtype=np.uint8)
    np.save(tmp_path / "faces.npy", images)
    code = textwrap.dedent(f"""
        import mlflow, numpy as np, pandas as pd
        mlflow.set_tracking_uri("sqlite:///{done.study_dir / 'mlflow.db'}")
        covid = mlflow.pyfunc.load_model("models:/{NAME}-covid@chosen", dst_path="{tmp_path / 'c'}")
        vae = mlflow.pyfunc.load_model("models:/{NAME}-vae@chosen", dst_path="{tmp_path / 'v'}")
        covid.predict(pd.read_csv("{tmp_path / 'windows.csv'}")).to_csv("{tmp_path / 'p.csv'}", index=False)
        vae.predict(np.load("{tmp_path / 'faces.npy'}")).to_csv("{tmp_path / 'z.csv'}", index=False)
    """)
    (tmp_path / "c").mkdir()
    (tmp_path / "v").mkdir()
    before = snapshot(done.study_dir)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=done.env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.allclose(pd.read_csv(tmp_path / "p.csv").p_increase, covid.predict(flat).p_increase, atol=1e-6)
    assert np.allclose(pd.read_csv(tmp_path / "z.csv").to_numpy(), vae.predict(images).to_numpy(), atol=1e-5)
    assert snapshot(done.study_dir) == before  # dst_path: nothing written into the study folder
