"""Study files: the issue's example parses, presets print as files that parse back, and a malformed file is one
line naming the file and the key, exit 2, with nothing created."""
from __future__ import annotations

import pytest

from study import studyfile
from study.cli import main

EXAMPLE = '''
# my-study.toml
name = "gru-vs-lstm-time"
[[part]]
trainable = "covid"
num_samples = 6
scheduler = "asha"
grace_period = 1
[part.constants]
epochs = 3
split = "time"
seeds = 2
[part.space]
cell = { choices = ["gru", "lstm"] }
seq_len = { int = [10, 30] }
hidden_size = { choices = [16, 32] }
lr = { float = [1e-3, 1e-2], log = true }
[[part.fixed]]
cell = "gru"
seq_len = 14
hidden_size = 16
lr = 3e-3
'''


def test_the_example_study_file_parses(tmp_path):
    path = tmp_path / "my-study.toml"
    path.write_text(EXAMPLE)
    study = studyfile.load(path)
    assert study.name == "gru-vs-lstm-time" and len(study.parts) == 1
    part = study.parts[0]
    assert (part.trainable, part.num_samples, part.total_trials, part.epochs) == ("covid", 6, 7, 3)
    assert part.fixed == [{"cell": "gru", "seq_len": 14, "hidden_size": 16, "lr": 3e-3}]
    assert part.space["seq_len"].low == 10 and part.space["lr"].log and (part.metric, part.mode) == ("val_acc", "max")
    assert studyfile.parse(studyfile.dumps(study), "again") == study  # what a study folder keeps reads back the same


@pytest.mark.parametrize("name", studyfile.preset_names())
def test_preset_show_prints_a_file_that_runs(name, tmp_path, capsys):
    assert main(["preset", "show", name]) == 0
    copy = tmp_path / "copy.toml"
    copy.write_text(capsys.readouterr().out)
    assert studyfile.load(copy) == studyfile.load(studyfile.preset_path(name))
    assert {p.trainable for p in studyfile.load(copy).parts} == {"covid", "vae"}


def _part(extra: str = "", constants: str = "epochs = 2", space: str = 'cell = { choices = ["gru"] }') -> str:
    return f'[[part]]\ntrainable = "covid"\nnum_samples = 2\n{extra}\n[part.constants]\n{constants}\n[part.space]\n{space}\n'


MALFORMED = [
    ("syntax", "[[part]\ntrainable = 'covid'", "TOML syntax error"),
    ("no part", 'name = "x"\n', "no [[part]]"),
    ("unknown top key", 'nmae = "x"\n' + _part(), "unknown key 'nmae'"),
    ("unknown trainable", _part().replace('"covid"', '"cnn"'), "trainable = 'cnn'"),
    ("unknown part key", _part('schedular = "asha"'), "unknown key 'schedular'"),
    ("unknown constant", _part(constants="epochs = 2\nhiden_size = 8"), "constants.hiden_size: not a covid setting"),
    ("wrong constant type", _part(constants='epochs = "two"'), "epochs='two': expected a number"),
    ("constant out of limits", _part(constants="epochs = 2\nseq_len = 0"), "seq_len=0: outside the limits"),
    ("unknown space key", _part(space="lrr = { float = [0.001, 0.01] }"), "space.lrr: not a covid setting"),
    ("inverted range", _part(space="seq_len = { int = [30, 10] }"), "space.seq_len: inverted range [30, 10]"),
    ("empty range", _part(space="lr = { float = [0.01, 0.01] }"), "space.lr: empty range"),
    ("empty choices", _part(space="cell = { choices = [] }"), "space.cell: choices must be a non-empty list"),
    ("bad choice", _part(space='cell = { choices = ["gru", "transformer"] }'), "space.cell: cell='transformer'"),
    ("float int range", _part(space="seq_len = { int = [1.5, 10] }"), "space.seq_len: int = [lo, hi]"),
    ("log from zero", _part(space="lr = { float = [0.0, 0.01], log = true }"), "log = true needs a low bound"),
    ("no kind", _part(space="lr = { low = 0.001, high = 0.01 }"), "space.lr: expected one of"),
    ("searched and constant", _part(constants="epochs = 2\ncell = 'gru'"), "cell is both searched (space) and constant"),
    ("bad scheduler", _part('scheduler = "hyperband"'), "scheduler = 'hyperband'"),
    ("negative samples", _part().replace("num_samples = 2", "num_samples = -1"), "num_samples = -1"),
    ("fixed unknown key", _part("fixed = [{ cel = 'gru' }]"), "fixed run 1: cel: not a covid setting"),
    ("fixed bad value", _part("fixed = [{ hidden_size = 0 }]"), "fixed run 1: hidden_size=0"),
    ("two covid parts", _part() + _part(), "two parts named 'covid'"),
    ("bad name", 'name = "../up"\n' + _part(), "name = '../up'"),
    ("vae key in covid", _part(constants="epochs = 2\nkl_weight = 1.0"), "constants.kl_weight: not a covid setting"),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_study_file_is_one_line_and_creates_nothing(text, expected, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    storage = tmp_path / "studies"
    assert main(["run", str(path), "--storage", str(storage), "--name", "s"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"study: error: {path}: ") and expected in err, err
    assert not storage.exists()


def test_run_a_missing_file_or_a_file_with_a_preset(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml"), "--storage", str(tmp_path / "s")]) == 2
    assert "no such study file" in capsys.readouterr().err
    path = tmp_path / "ok.toml"
    path.write_text(_part())
    assert main(["run", str(path), "--preset", "smoke", "--storage", str(tmp_path / "s")]) == 2
    assert "--preset goes with a preset's part or homework" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_set_and_fixed_stay_overrides_on_a_file(tmp_path, capsys):
    """--set of a key the file searches is refused naming the file; a bad --fixed run names the flag."""
    path = tmp_path / "ok.toml"
    path.write_text(_part())
    assert main(["run", str(path), "--set", "cell=lstm", "--storage", str(tmp_path / "s")]) == 2
    assert f"{path} searches cell for covid" in capsys.readouterr().err
    assert main(["run", str(path), "--fixed", '[{"seq_len": 0}]', "--storage", str(tmp_path / "s")]) == 2
    assert "--fixed run 1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
