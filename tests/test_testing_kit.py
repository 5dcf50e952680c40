"""The plugin authors' test kit, trainables.testing, on the three trainables the project ships and on plugins that
break one part of the contract each.

`check_trainable` runs in this process (seconds each); `smoke_study` runs one study of three parts (covid, vae and
examples/cnn, two trials each) through the real `study run` on synthetic data: Ray's start is paid once.
"""
from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from covid_fixture import wave_csv, write_data_dir, write_faces_zip
from trainables import Trainable, registry
from trainables.testing import check_trainable, smoke_study

ROOT = Path(__file__).resolve().parents[1]
COVID = dict(epochs=2, batch_size=64, date_range="homework", split="random", seeds=2, norm="log1p",
             features="counts", cell="gru", seq_len=3, hidden_size=8, num_layers=1, lr=0.01, num_threads=1)
VAE = dict(epochs=2, batch_size=32, image_size=16, max_images=64, latent_dim=4, iw_samples=4, lr=0.001,
           num_threads=1)
CNN = dict(epochs=2, date_range="full", split="time", seq_len=7, features="relative+weekday", channels=8, levels=2,
           batch_size=32, seeds=2, device="cpu", num_threads=1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kit-data")
    write_data_dir(root, csv=wave_csv())
    write_faces_zip(root, n=64)
    return root


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))


def test_check_trainable_covid(data_dir, cache):
    checked = check_trainable(registry.get("covid"), data_dir=str(data_dir), **COVID)
    assert [m["epoch"] for m in checked.curve] == [1, 2] and checked.resumed_from == [1]
    assert checked.memory_bytes is None or checked.memory_bytes >= checked.peak_bytes


def test_check_trainable_vae(data_dir, cache):
    checked = check_trainable(registry.get("vae"), data_dir=str(data_dir), **VAE)
    assert [m["epoch"] for m in checked.curve] == [1, 2] and checked.resumed_from == [1]
    assert set(registry.get("vae").artifacts) <= set(checked.artifacts)


def test_check_trainable_cnn_example(data_dir, cache):
    cnn = registry.find("cnn:TRAINABLE", ROOT / "examples" / "cnn").trainable
    checked = check_trainable(cnn, data_dir=str(data_dir), **CNN)
    assert [m["epoch"] for m in checked.curve] == [1, 2] and checked.resumed_from == [1]


def test_smoke_study_of_the_three_trainables(data_dir, tmp_path):
    folder = tmp_path / "three"
    folder.mkdir()
    shutil.copy2(ROOT / "examples" / "cnn" / "cnn.py", folder / "cnn.py")
    parts = []
    for trainable, settings in (("covid", COVID), ("vae", VAE), ("cnn:TRAINABLE", CNN)):
        constants = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
        parts.append(f'[[part]]\ntrainable = "{trainable}"\nscheduler = "none"\nfixed = [{{}}, {{}}]\n\n'
                     f"[part.constants]\n{constants}\n")
    (folder / "three.toml").write_text('name = "three"\n\n' + "\n".join(parts))
    study = smoke_study(folder / "three.toml", tmp_path, data_dir=data_dir,
                        env={"STUDY_CACHE_DIR": str(tmp_path / "cache")})
    trials = study.trials
    assert sorted(trials.part.unique()) == ["cnn", "covid", "vae"]
    for part in ("covid", "vae", "cnn"):
        rows = trials[trials.part == part]
        assert len(rows) == 2 and set(rows.state) == {"COMPLETE"}, rows
        assert study.chosen(part)["trial"].epochs_run == 2


# ------------------------------------------------------------------------------------------- broken plugins
BROKEN = '''
import json
import random
from dataclasses import dataclass
from pathlib import Path

from trainables import Trainable


@dataclass
class Config:
    fault: str = ""
    epochs: int = 3


def train(config, report, *, checkpoint_dir=None, resume_from=None, artifact_dir=None, data=None):
    rng, first = random.Random(0), 1
    if resume_from is not None:
        state = json.loads((Path(resume_from) / "state.json").read_text())
        first = state["epoch"] + 1
        if config.fault != "rng":
            rng.setstate((state["rng"][0], tuple(state["rng"][1]), state["rng"][2]))
    blob = bytes(range(256)) * (256 << 10) if config.fault == "big" else b""  # 64 MiB, every page touched
    for epoch in range(first, config.epochs + 1):
        loss = rng.random() / epoch + len(blob) * 0
        if config.fault != "no-checkpoint":
            Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
            (Path(checkpoint_dir) / "state.json").write_text(json.dumps({"epoch": epoch, "rng": rng.getstate()}))
        report({"epoch": epoch - 1 if config.fault == "zero-based" else epoch, "val_loss": loss})
        if config.fault == "short" and epoch == 2:
            return
    if config.fault != "no-artifact":
        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        (Path(artifact_dir) / "summary.json").write_text("{}")


TRAINABLE = Trainable(name="broken", config=Config, train=train, metric="val_loss", mode="min",
                      artifacts=("summary.json",))
SMALL_MEMORY = Trainable(name="broken-memory", config=Config, train=train, metric="val_loss", mode="min",
                         memory=lambda config, data: 1)
'''


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken")
    (folder / "broken_plugin.py").write_text(textwrap.dedent(BROKEN))
    found = registry.find("broken_plugin:TRAINABLE", folder)
    return found.trainable, sys.modules["broken_plugin"]


def test_a_plugin_that_keeps_the_contract_passes(broken):
    trainable, _ = broken
    checked = check_trainable(trainable)
    assert checked.resumed_from == [1, 2] and checked.artifacts == ["summary.json"]


@pytest.mark.parametrize("fault, says", [
    ("rng", r"broken: resume from epoch 1: epoch 2: val_loss = .* where the uninterrupted run had"),
    ("no-checkpoint", r"broken: resume: no checkpoint was written"),
    ("no-artifact", r"broken: artifacts: the uninterrupted run did not write summary.json"),
    ("zero-based", r"broken: report: epoch=0: epochs are 1-based"),
    ("short", r"broken: epochs: the last report was epoch 2 of 3"),
])
def test_each_broken_part_of_the_contract_is_named(broken, fault, says):
    trainable, _ = broken
    with pytest.raises(AssertionError, match=says):
        check_trainable(trainable, fault=fault)


def test_a_memory_estimate_below_the_peak_is_named(broken):
    _, module = broken
    says = r"broken-memory: memory: estimated 0.0 MiB, measured a peak of (6\d|7\d)\.\d MiB"  # the 64 MiB it touched
    with pytest.raises(AssertionError, match=says):
        check_trainable(module.SMALL_MEMORY, fault="big")


def test_the_kit_imports_neither_ray_nor_mlflow():
    import subprocess

    code = "import sys, trainables.testing; print(sorted(m for m in ('ray', 'mlflow', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_check_trainable_takes_only_a_trainable():
    with pytest.raises(TypeError, match="takes a trainables.Trainable"):
        check_trainable("covid")  # type: ignore[arg-type]
    assert isinstance(registry.get("covid"), Trainable)
