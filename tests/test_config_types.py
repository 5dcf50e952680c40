"""A config is checked whole when its Trainable is built, and a study file's values are converted to its fields'
annotations: flat keys that clash, the study's own names, annotations no study file could set, Enum, Literal,
list, tuple, Optional and Path fields, with or without `from __future__ import annotations`; what a trial gets is
converted, what is logged and stored stays plain.

Most of it needs no Ray: `Trainable(...)`, `make_config`, and `study trainables FILE` (which reads and checks the
study file). One real study checks what a trial gets and what MLflow keeps.
"""
from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import pytest
from mlflow.tracking import MlflowClient

from data.sequence_data import CovidDataConfig
from study.cli import main
from trainables import Trainable
from trainables.config import NESTED, config_from_dict, flat_config
from trainables.names import RESERVED_KEYS
from trainables.registry import find
from trainables.trainable import TrainableError

PLUGIN = '''HEADER
"""A toy plugin with a field of each annotation a config may use."""
import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from trainables import Trainable


class Speed(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class TypedConfig:
    speed: Speed = Speed.FAST
    level: Level = Level.LOW
    kind: Literal["a", "b"] = "a"
    sizes: list[int] = field(default_factory=lambda: [4, 8])
    widths: tuple[int, ...] = (2,)
    pair: tuple[float, float] = (0.5, 1.0)
    note: str | None = None
    limit: Optional[int] = None
    out: Path = Path("out")
    epochs: int = 2


def train(config, report, artifact_dir, **context):
    """Writes the type of each value it got; fails unless they are the converted ones."""
    got = {k: type(getattr(config, k)).__name__ for k in ("speed", "level", "kind", "sizes", "widths", "pair", "out")}
    if not (isinstance(config.speed, Speed) and isinstance(config.level, Level) and isinstance(config.out, Path)):
        raise TypeError(f"not converted: {got}")
    Path(artifact_dir).mkdir(parents=True, exist_ok=True)
    (Path(artifact_dir) / "types.json").write_text(json.dumps({**got, "speed_value": config.speed.value}))
    for epoch in range(1, config.epochs + 1):
        slow = 1.0 if config.speed is Speed.SLOW else 0.0
        report({"epoch": epoch, "val_loss": sum(config.sizes) / epoch + slow + len(config.kind)})


TRAINABLE = Trainable(name="typed", config=TypedConfig, train=train, metric="val_loss", mode="min",
                      artifacts=("types.json",))
'''

HEADERS = {"plain": "", "future": "from __future__ import annotations"}

STUDY = '''
name = "typed-study"

[[part]]
trainable = "typed_future:TRAINABLE"
num_samples = NUM
fixed = [ { kind = "b", sizes = [1, 2], level = 2 } ]

[part.constants]
epochs = 2
CONSTANTS

[part.space]
SPACE
'''


def write_plugin(folder: Path, header: str = "future") -> str:
    """The toy plugin as `typed_<header>.py` in `folder`; its reference."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"typed_{header}.py").write_text(PLUGIN.replace("HEADER", HEADERS[header]))
    return f"typed_{header}:TRAINABLE"


def write_study(folder: Path, constants: str = "", space: str = 'speed = { choices = ["fast", "slow"] }',
                num: int = 1) -> Path:
    write_plugin(folder)
    path = folder / "typed-study.toml"
    path.write_text(STUDY.replace("NUM", str(num)).replace("CONSTANTS", constants).replace("SPACE", space))
    return path


# ------------------------------------------------------------------------------------------------ Trainable(...)
def _train(config, report, **context):
    pass


def refused(config: type) -> str:
    """`Trainable(...)`'s one line for a config it refuses."""
    with pytest.raises(TrainableError) as err:
        Trainable(name="t", config=config, train=_train, metric="val_loss")
    assert err.value.key == "config" and "\n" not in str(err.value), str(err.value)
    return str(err.value)


def test_a_field_named_like_a_nested_configs_field_is_refused():
    """`seed = 5` in a study file set the nested config's seed only, and the flat config showed one `seed`."""
    @dataclass
    class MyConfig:
        seed: int = 0
        data: CovidDataConfig = field(default_factory=CovidDataConfig, metadata=NESTED)
        epochs: int = 2

    assert refused(MyConfig) == ("config: 'seed' is both MyConfig.seed and CovidDataConfig.seed (MyConfig.data): a "
                                 "study file gives every key flat (seed = ...), so two fields cannot share a name; "
                                 "rename one")


@pytest.mark.parametrize("name", ["group", "trial_id", "state", "run_id"])
def test_a_field_named_like_the_studys_own_keys_is_refused(name):
    cls = dataclass(type("Cfg", (), {"__annotations__": {name: "int", "epochs": "int"}, name: 0, "epochs": 1}))
    message = refused(cls)
    assert f"Cfg.{name}: {name!r} is a name the study uses itself" in message and "rename the field" in message


def test_a_plugin_whose_config_is_refused_is_one_line_naming_the_study_file(tmp_path, capsys):
    (tmp_path / "grouped.py").write_text(PLUGIN.replace("HEADER", "").replace("    epochs: int = 2",
                                                                           "    epochs: int = 2\n    group: str = 'x'"))
    path = tmp_path / "grouped.toml"
    path.write_text('[[part]]\ntrainable = "grouped:TRAINABLE"\nfixed = [{}]\n')
    assert main(["run", str(path), "--storage", str(tmp_path / "studies")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"study: error: {path}: part 1: trainable = 'grouped:TRAINABLE': not a valid Trainable: "
                          "config: TypedConfig.group: 'group' is a name the study uses itself") and "\n" not in err, err
    assert not (tmp_path / "studies").exists()


def test_the_reserved_names_cover_the_columns_a_trial_row_puts_beside_its_config():
    from analysis.api import ID_COLUMNS

    assert set(ID_COLUMNS) <= set(RESERVED_KEYS) and "group" in RESERVED_KEYS


class Opaque:
    """A class a study file cannot give a value of."""


@pytest.mark.parametrize("annotation, text", [
    (dict[str, int], "dict[str, int]"), (Union[int, str], "Union[int, str]"), (Opaque, "Opaque"),
    (list, "list"), (Any, "Any"), (set[int], "set[int]")])
def test_an_annotation_no_study_file_can_set_is_refused_naming_the_field_and_the_supported_ones(annotation, text):
    cls = dataclass(type("Cfg", (), {"__annotations__": {"x": annotation, "epochs": int}, "x": None, "epochs": 1}))
    message = refused(cls)
    assert message.startswith(f"config: field 'x' of Cfg: annotation {text} is not supported; supported: int, "
                              "float, bool, str, Path, an Enum"), message


def test_a_default_that_is_not_a_value_of_its_annotation_is_refused():
    @dataclass
    class Cfg:
        kind: Literal["a", "b"] = "c"
        epochs: int = 1

    assert refused(Cfg) == "config: field 'kind' of Cfg: default kind='c': expected one of a, b"


def test_a_type_local_to_a_function_is_named_when_it_does_not_resolve():
    class Local(enum.Enum):
        A = "a"

    @dataclass
    class Cfg:  # this module has `from __future__ import annotations`: "Local" is text nothing resolves
        mode: Local = Local.A
        epochs: int = 1

    message = refused(Cfg)
    assert message.startswith("config: field 'mode' of Cfg: annotation 'Local' does not resolve") and \
        "define the type at module level" in message, message


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_a_nested_configs_fields_are_converted_too():
    @dataclass
    class Inner:
        colour: Colour = Colour.RED
        where: Path = Path("x")

    @dataclass
    class Outer:
        inner: Inner = field(default_factory=Inner, metadata=NESTED)
        epochs: int = 1

    t = Trainable(name="t", config=Outer, train=_train, metric="m")
    cfg = t.make_config({"colour": "blue", "where": "a/b"})
    assert cfg.inner.colour is Colour.BLUE and cfg.inner.where == Path("a/b")
    assert t.full_config({"colour": "blue"}) == {"colour": "blue", "where": "x", "epochs": 1}


# ------------------------------------------------------------------------------------------------ values
@pytest.fixture(params=list(HEADERS))
def typed(request, tmp_path) -> Trainable:
    """The toy plugin, its module with and without `from __future__ import annotations`."""
    return find(write_plugin(tmp_path, request.param), tmp_path).trainable


def test_study_file_values_become_the_fields_types_and_flatten_back_to_plain_values(typed):
    cfg = typed.make_config({"speed": "slow", "level": 2, "kind": "b", "sizes": [1, 2.0], "widths": [3, 4],
                             "pair": [1, 2.5], "note": "n", "limit": 3.0, "out": "a/b"})
    speed, level = type(cfg.speed), type(cfg.level)
    assert cfg.speed is speed.SLOW and cfg.level is level.HIGH and cfg.kind == "b"
    assert cfg.sizes == [1, 2] and all(type(s) is int for s in cfg.sizes)
    assert cfg.widths == (3, 4) and cfg.pair == (1, 2.5) and cfg.note == "n" and cfg.limit == 3
    assert type(cfg.limit) is int and cfg.out == Path("a/b")
    flat = typed.full_config({"speed": "slow", "level": 2, "kind": "b", "sizes": [1, 2.0], "widths": [3, 4],
                              "pair": [1, 2.5], "note": "n", "limit": 3.0, "out": "a/b"})
    assert flat == {"speed": "slow", "level": 2, "kind": "b", "sizes": [1, 2], "widths": (3, 4), "pair": (1, 2.5),
                    "note": "n", "limit": 3, "out": "a/b", "epochs": 2}
    assert type(flat["level"]) is int and json.loads(json.dumps(flat)) == {**flat, "widths": [3, 4], "pair": [1, 2.5]}
    assert flat_config(cfg) == flat and config_from_dict(typed.config, flat) == cfg  # checkpoints compare these
    assert typed.full_config({}) == {"speed": "fast", "level": 1, "kind": "a", "sizes": [4, 8], "widths": (2,),
                                     "pair": (0.5, 1.0), "note": None, "limit": None, "out": "out", "epochs": 2}


@pytest.mark.parametrize("key, value, says", [
    ("speed", "medium", "speed='medium': expected one of fast, slow"),
    ("speed", "FAST", "speed='FAST': expected one of fast, slow"),  # by value, not by name
    ("level", 3, "level=3: expected one of 1, 2"),
    ("level", True, "level=True: expected one of 1, 2"),
    ("kind", "c", "kind='c': expected one of a, b"),
    ("sizes", "4,8", "sizes='4,8': expected a list (a string is not one)"),
    ("sizes", [4, "x"], "sizes=[4, 'x']: element 2 ('x'): expected a number"),
    ("widths", [1.5], "widths=[1.5]: element 1 (1.5): expected a whole number"),
    ("pair", [1.0], "pair=[1.0]: expected a list of 2"),
    ("note", 5, "note=5: expected a string"),
    ("limit", "many", "limit='many': expected a number"),
    ("out", 3, "out=3: expected a path (a non-empty string)"),
])
def test_a_value_outside_its_annotation_is_one_line_naming_the_key(typed, key, value, says):
    with pytest.raises(ValueError) as err:
        typed.make_config({key: value})
    assert str(err.value) == says


# ------------------------------------------------------------------------------------------------ study files
def test_study_trainables_prints_every_default_enums_and_paths_included(tmp_path, capsys):
    path = write_study(tmp_path)
    assert main(["trainables", str(path)]) == 0
    line = capsys.readouterr().out.split("typed_future:TRAINABLE", 1)[1].splitlines()[1]
    assert line.strip() == ("speed=fast, level=1, kind=a, sizes=[4, 8], widths=[2], pair=[0.5, 1.0], note=null, "
                            "limit=null, out=out, epochs=2"), line
    assert main(["trainables", str(path), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["typed_future:TRAINABLE"]["config"] == {
        "speed": "fast", "level": 1, "kind": "a", "sizes": [4, 8], "widths": [2], "pair": [0.5, 1.0], "note": None,
        "limit": None, "out": "out", "epochs": 2}


@pytest.mark.parametrize("constants, space, says", [
    ('kind = "c"', "", "constants: kind='c': expected one of a, b"),
    ('sizes = "4,8"', "", "constants: sizes='4,8': expected a list (a string is not one)"),
    ("", 'speed = { choices = ["fast", "medium"] }', "space.speed: speed='medium': expected one of fast, slow"),
    ("", 'kind = { choices = ["a", "z"] }', "space.kind: kind='z': expected one of a, b"),
])
def test_a_bad_study_file_value_is_one_line_before_anything_runs(tmp_path, capsys, constants, space, says):
    path = write_study(tmp_path, constants=constants, space=space)
    assert main(["trainables", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"study: error: {path}: part 1 (typed): {says}", err
    assert main(["run", str(path), "--storage", str(tmp_path / "studies")]) == 2
    assert capsys.readouterr().err.strip() == err and not (tmp_path / "studies").exists()


def test_a_trial_gets_converted_values_and_mlflow_keeps_plain_ones(tmp_path):
    """A real study: a fixed run and a searched Enum (Optuna's choices are plain values); each trial's config
    holds an Enum member, a Path and lists/tuples, its params the study file's plain values."""
    path = write_study(tmp_path / "project")
    proc = subprocess.run([sys.executable, "-m", "study", "run", str(path), "--storage", "studies"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    study_dir = tmp_path / "studies" / "typed-study"
    client = MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("typed-study")
    runs = client.search_runs([exp.experiment_id], "tags.trainable = 'typed'", max_results=10)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        params = run.data.params
        assert params["speed"] in ("fast", "slow") and params["out"] == "out" and params["widths"] == "[2]"
        types = json.loads(Path(client.download_artifacts(run.info.run_id, "results/types.json",
                                                          str(tmp_path))).read_text())
        assert types == {"speed": "Speed", "level": "Level", "kind": "str", "sizes": "list", "widths": "tuple",
                         "pair": "tuple", "out": "PosixPath", "speed_value": params["speed"]}, types
    fixed = next(r for r in runs if r.data.tags.get("group") == "fixed")
    assert fixed.data.params["level"] == "2" and fixed.data.params["sizes"] == "[1, 2]"
    assert fixed.data.params["kind"] == "b" and fixed.data.params["speed"] == "fast"  # the default, as Optuna saw it
