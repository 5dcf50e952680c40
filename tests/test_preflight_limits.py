"""Checked before anything exists: configs a trial could not hold in memory or that cannot work (shapes, for
searched values as for constants), inputs read from paths (regular files of bounded size, bounded nesting) and
one rule for every study name. Each refusal is one `study: error:` line, exit 2, and nothing is created: no
storage folder, no mlflow.db, no mlruns/."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from data import inputs
from data.errors import DataError
from study import checks, studyfile
from study.cli import main
from study.preflight import check_memory, worst_searched
from study.spec import StudySpec, save_spec
from trainables import sequence, vae, vae_models

ROOT = Path(__file__).resolve().parents[1]
DEEP = 100_000


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path, so a stray mlruns/ or mlflow.db would show up there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(capsys, tmp_path: Path, *args: str) -> str:
    """`study ARGS --storage tmp/studies`: exit 2, one line, nothing created in tmp_path; the line."""
    before = set(tmp_path.rglob("*"))
    code = main([*args, *(["--storage", str(tmp_path / "studies")] if args[0] == "run" else [])])
    out = capsys.readouterr()
    lines = (out.out + out.err).strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("study: error: "), (code, lines)
    assert set(tmp_path.rglob("*")) == before
    return lines[0]


COVID = ('[[part]]\ntrainable = "covid"\nnum_samples = 2\n[part.constants]\nepochs = 1\n'
         '[part.space]\ncell = { choices = ["gru"] }\n')


# --------------------------------------------------------------------------------------------- inputs from paths
def test_a_study_file_that_is_not_a_regular_file_is_refused_unread(in_tmp, capsys):
    os.mkfifo(in_tmp / "fifo.toml")  # reading it would wait for a writer forever
    (in_tmp / "dir.toml").mkdir()
    for name in ("fifo.toml", "dir.toml"):
        assert "not a regular file" in refused(capsys, in_tmp, "run", str(in_tmp / name))
    assert "not a regular file" in refused(capsys, in_tmp, "run", "/dev/zero")


def test_a_study_file_over_the_size_limit_is_refused(in_tmp, capsys):
    big = in_tmp / "big.toml"
    big.write_text(COVID + "#" * inputs.MAX_INPUT_BYTES)
    assert f"{big}: larger than 1024 KiB" in refused(capsys, in_tmp, "run", str(big))


@pytest.mark.parametrize("text", ["a = " + "[" * DEEP + "]" * DEEP, "a = " + "[" * 40 + "]" * 40,
                                  COVID.replace("epochs = 1", "epochs = 1\nx = " + "{ y = " * 40 + "1" + " }" * 40)])
def test_deeply_nested_toml_is_one_line_not_a_recursion_error(text, in_tmp, capsys):
    path = in_tmp / "deep.toml"
    path.write_text(text)
    assert f"{path}: nested deeper than {inputs.MAX_DEPTH} levels" in refused(capsys, in_tmp, "run", str(path))


def test_fixed_files_are_regular_bounded_and_shallow(in_tmp, capsys):
    os.mkfifo(in_tmp / "fifo.json")
    big, deep = in_tmp / "big.json", in_tmp / "deep.json"
    big.write_text("[" + " " * inputs.MAX_INPUT_BYTES + "]")
    deep.write_text("[" * DEEP)
    args = ("run", "covid", "--preset", "smoke", "--name", "s", "--fixed")
    assert "not a regular file" in refused(capsys, in_tmp, *args, str(in_tmp / "fifo.json"))
    assert "not a regular file" in refused(capsys, in_tmp, *args, str(in_tmp))
    assert "larger than 1024 KiB" in refused(capsys, in_tmp, *args, str(big))
    assert "--fixed: nested deeper" in refused(capsys, in_tmp, *args, str(deep))
    assert "--fixed: nested deeper" in refused(capsys, in_tmp, *args, "[" * DEEP)
    assert "--fixed: nested deeper" in refused(capsys, in_tmp, *args, "[" * 40 + "]" * 40)
    assert "--set seeds: nested deeper" in refused(capsys, in_tmp, "run", "covid", "--preset", "smoke", "--name",
                                                   "s", "--set", "seeds=" + "[" * 20_000)


def test_resume_reads_a_bounded_study_state(in_tmp, capsys):
    folder = in_tmp / "studies" / "x"
    folder.mkdir(parents=True)
    (folder / "study.json").write_text("[" * DEEP)
    assert "nested deeper" in refused(capsys, in_tmp, "resume", str(folder))
    (folder / "study.json").unlink()
    os.mkfifo(folder / "study.json")
    assert "not a regular file" in refused(capsys, in_tmp, "resume", str(folder))
    (folder / "study.json").unlink()
    save_spec(StudySpec(target="covid", preset="smoke", name="../../elsewhere", study_dir=str(folder),
                        mlflow_uri="sqlite:///x.db"))
    assert "name '../../elsewhere': use 1-128" in refused(capsys, in_tmp, "resume", str(folder))


# ------------------------------------------------------------------------------------------------------ names
def test_a_name_from_the_files_name_follows_the_name_rule(in_tmp, capsys):
    path = in_tmp / "my study.toml"
    path.write_text(COVID)
    line = refused(capsys, in_tmp, "run", str(path))
    assert str(path) in line and "rename the file or give --name" in line
    long = in_tmp / ("x" * 120 + ".toml")  # a stem that fits, with the time stamp a name that does not
    long.write_text(COVID)
    assert "rename the file or give --name" in refused(capsys, in_tmp, "run", str(long))
    # --name (checked by the same rule) or a name in the file stands instead: the run goes on to the next check
    assert "--fixed run 1" in refused(capsys, in_tmp, "run", str(path), "--name", "mine", "--fixed", '[{"seq_len": 0}]')
    path.write_text('name = "mine"\n' + COVID)
    assert "--fixed run 1" in refused(capsys, in_tmp, "run", str(path), "--fixed", '[{"seq_len": 0}]')


@pytest.mark.parametrize("name", ["a b", "..", "x" * 129, "é"])
def test_every_source_of_a_name_has_one_rule(name, in_tmp, capsys):
    assert not checks.name_ok(name)
    assert "--name" in refused(capsys, in_tmp, "run", "covid", "--preset", "smoke", "--name", name)
    path = in_tmp / "s.toml"
    path.write_text(f"name = {json.dumps(name)}\n" + COVID)
    assert checks.NAME_RULE in refused(capsys, in_tmp, "run", str(path))
    path.write_text(COVID.replace("num_samples", f"name = {json.dumps(name)}\nnum_samples"))
    assert checks.NAME_RULE in refused(capsys, in_tmp, "run", str(path))


# ------------------------------------------------------------------------------------------------------ shapes
def test_the_vae_config_refuses_a_size_its_depth_cannot_halve():
    for bad in ({"arch": "conv", "image_size": 30}, {"arch": "conv", "image_size": 32, "hidden": "8,8,8,8,8,8"},
                {"arch": "homework_conv", "image_size": 62}, {"arch": "homework_conv", "hidden": "8,8,8"}):
        with pytest.raises(ValueError, match="image_size|two conv widths"):
            vae.VAEConfig.from_dict(bad)
    assert vae.VAEConfig.from_dict({"arch": "mlp", "image_size": 30}).image_size == 30
    assert vae_models.check_shape("conv", 64, (8, 8, 8)) == (8, 8, 8)


VAE = ('[[part]]\ntrainable = "vae"\nnum_samples = 2\n{fixed}\n[part.constants]\nepochs = 1\n{constants}\n'
       '[part.space]\n{space}\n')
SHAPES = [
    ("constant", dict(constants='arch = "conv"\nimage_size = 30', space="lr = { float = [0.001, 0.01] }"),
     "constants: conv: image_size 30"),
    ("one searched key", dict(constants='image_size = 30', space='arch = { choices = ["mlp", "conv"] }'),
     "space.arch: conv: image_size 30"),
    ("searched together", dict(space='arch = { choices = ["mlp", "conv"] }\nimage_size = { choices = [28, 30] }'),
     "space arch='conv', image_size=30: conv: image_size 30"),
    ("inside a range", dict(constants='arch = "conv"', space="image_size = { int = [28, 36] }"),
     "space.image_size: conv: image_size 29"),
    ("with a string of widths", dict(constants="image_size = 16", space='arch = { choices = ["mlp", "conv"] }\n'
                                                                        'hidden = { choices = ["8", "8,8,8,8,8"] }'),
     "space arch='conv', hidden='8,8,8,8,8': conv: image_size 16"),
    ("fixed run", dict(fixed='fixed = [{ arch = "conv", image_size = 30 }]', space="lr = { float = [0.001, 0.01] }"),
     "fixed run 1: conv: image_size 30"),
]


@pytest.mark.parametrize("parts, says", [(p, s) for _, p, s in SHAPES], ids=[s[0] for s in SHAPES])
def test_shapes_are_checked_for_searched_values_as_for_constants(parts, says, in_tmp, capsys):
    path = in_tmp / "shapes.toml"
    path.write_text(VAE.format(**{"fixed": "", "constants": "", "space": "", **parts}))
    line = refused(capsys, in_tmp, "run", str(path), "--name", "s")
    assert line.startswith(f"study: error: {path}: part 1 (vae): ") and says in line, line


def test_searched_combinations_are_bounded():
    part = studyfile.preset_part("homework", "covid")
    combos = studyfile._combinations(part.space)  # 24,576 combinations of its values: pairs instead, capped
    assert 0 < len(combos) <= studyfile.COMBINATIONS and all(len(c) == 2 for c in combos)
    vae_part = studyfile.preset_part("homework", "vae")
    assert len(studyfile._combinations(vae_part.space)) == 8 * 4 * 2 * 2  # all of them, every key at once
    assert studyfile.edges(studyfile.distribution({"int": [1, 40]}, "x", "f")) == [1, 40]
    assert studyfile.edges(studyfile.distribution({"int": [16, 64], "step": 16}, "x", "f")) == [16, 32, 48, 64]


def test_presets_and_examples_still_parse():
    for path in [*studyfile.PRESET_DIR.glob("*.toml"), *(ROOT / "examples").glob("*.toml")]:
        studyfile.load(path)


# ------------------------------------------------------------------------------------------------------ memory
def _covid_source(date_range: str = "homework"):
    """What the estimate reads of the CSSE data: its countries x days and its date range."""
    return SimpleNamespace(series=SimpleNamespace(cumulative=np.zeros((201, 122))), date_range=date_range)


class _Faces:
    images = np.zeros((20_963, 1), np.uint8)  # only the count matters to the estimate
    source = Path("faces.zip")


def _spec(**kw) -> StudySpec:
    return StudySpec(target="covid", preset="smoke", name="x", study_dir="unused", mlflow_uri="", **kw)


def test_estimates_grow_with_the_model_and_refuse_what_no_machine_holds():
    small = sequence.memory(sequence.SequenceConfig.from_dict({"date_range": "homework"}), _covid_source())
    big = sequence.memory(sequence.SequenceConfig.from_dict({"date_range": "homework", "hidden_size": 4096,
                                                             "num_layers": 8, "seeds": 64}), _covid_source())
    assert 50 << 20 < small < 1 << 30 and big > 1 << 40
    conv = vae.memory(vae.VAEConfig(arch="conv", image_size=32), _Faces())
    mlp = vae.memory(vae.VAEConfig(arch="mlp", image_size=512, hidden=(65536, 65536)), _Faces())  # on meta: instant
    assert 2 * 20_963 * 3 * 32 * 32 < conv < 1 << 30 and mlp > 1 << 40


def test_a_fixed_run_no_trial_can_hold_is_refused_naming_it():
    part = studyfile.preset_part("smoke", "covid")
    check_memory(part, _covid_source(), _spec())  # the preset fits
    big = dataclasses.replace(part, fixed=[*part.fixed, {"cell": "lstm", "hidden_size": 4096, "num_layers": 8}],
                              constants={**part.constants, "seeds": 64})
    with pytest.raises(DataError, match=rf"smoke.toml: covid fixed run {len(part.fixed) + 1} \(cell='lstm'.*: a trial "
                                        r"needs about [\d,.]+ GiB of memory, more than this machine's memory"):
        check_memory(big, _covid_source(), _spec())
    check_memory(big, _covid_source(), _spec(address="127.0.0.1:6379"))  # a cluster's nodes: not known here


def test_the_searchs_worst_case_is_checked_with_every_key_at_its_largest():
    part = dataclasses.replace(studyfile.preset_part("smoke", "vae"), space={
        **studyfile.preset_part("smoke", "vae").space,
        "hidden": studyfile.distribution({"choices": ["64", "65536,65536"]}, "x", "f"),
        "image_size": studyfile.distribution({"choices": [16, 512]}, "x", "f")})
    assert worst_searched(part, _Faces()) == [{"kl_weight": 100.0, "latent_dim": 8, "lr": 0.003,
                                               "hidden": "65536,65536", "image_size": 512}]
    with pytest.raises(DataError, match=r"vae search's worst case \(.*hidden='65536,65536', image_size=512\): a "
                                        r"trial needs about"):
        check_memory(part, _Faces(), _spec())
    check_memory(studyfile.preset_part("homework", "vae"), _Faces(), _spec())


def test_a_model_too_large_is_one_line_before_the_folder_mlflow_or_ray(real_data_dir, tmp_path):
    """Through `python -m study` with the real data: refused after the data is read, before the lock and Ray."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    path = cwd / "big.toml"
    path.write_text(COVID.replace("epochs = 1", 'epochs = 1\ndate_range = "homework"\nseeds = 64\nhidden_size = 4096'))
    proc = subprocess.run([sys.executable, "-m", "study", "run", str(path), "--storage", str(cwd / "studies"),
                           "--data-dir", str(real_data_dir)], cwd=cwd, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "STUDY_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)})
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, lines
    assert f"{path}: covid search's worst case (cell='gru'): a trial needs about" in lines[0]
    assert sorted(p.name for p in cwd.iterdir()) == ["big.toml"]  # no studies/, mlflow.db, mlruns/


def test_a_gpu_trial_is_held_to_its_share_of_the_gpu(monkeypatch):
    """On a GPU, evaluation takes EVAL_ROWS["cuda"] windows at once: a GRU of 256 needs ~3.6 GiB there."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _: SimpleNamespace(total_memory=8 << 30))
    part = dataclasses.replace(studyfile.preset_part("smoke", "covid"), fixed=[{"hidden_size": 256}], num_samples=0)
    with pytest.raises(DataError, match=r"covid fixed run 1 \(hidden_size=256\): .* more than --gpus-per-trial "
                                        r"0.25 of a 8.0 GiB GPU \(2.0 GiB\)"):
        check_memory(part, _covid_source(), _spec(gpus_per_trial=0.25))
    check_memory(part, _covid_source(), _spec(gpus_per_trial=1))  # the whole GPU holds it
    cpu = dataclasses.replace(part, fixed=[{"hidden_size": 256, "device": "cpu"}])
    check_memory(cpu, _covid_source(), _spec(gpus_per_trial=0.25))  # a CPU trial: the machine's memory alone
