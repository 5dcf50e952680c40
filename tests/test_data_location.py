"""The two settings: the data folder (flag > env > user cache), only ever read, never created; and the cache folder
(flag > env > user cache, $XDG_CACHE_HOME respected), where a downloaded CSV and the image cache go."""
from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from data.errors import DataError, MissingData
from data.location import (
    CACHE_ENV_VAR, CONFIRMED_NAME, ENV_VAR, covid_file, faces_source, resolve_cache_dir, resolve_data_dir,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """The user cache of these tests is a tmp folder: nothing here may read or fill the real ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(CACHE_ENV_VAR, raising=False)
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_flag_beats_env_beats_cache(monkeypatch, tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "flag").mkdir()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv(ENV_VAR)
    assert resolve_data_dir(None) == tmp_path / "xdg" / "study"
    assert not (tmp_path / "xdg").exists()  # the default is not created by asking


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_mistyped_data_folder_is_an_error_and_is_not_created(tmp_path, monkeypatch, how):
    wrong = tmp_path / "shared" / "data"
    if how == "env":
        monkeypatch.setenv(ENV_VAR, str(wrong))
    with pytest.raises(DataError) as err:
        resolve_data_dir(str(wrong) if how == "flag" else None)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(wrong)) and "does not exist" in text
    assert "--data-dir" in text and f"${ENV_VAR}" in text
    assert not (tmp_path / "shared").exists()


def test_a_file_is_not_a_data_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        resolve_data_dir(str(tmp_path / "file"))


def test_cache_folder_flag_beats_env_beats_xdg(tmp_path, monkeypatch):
    assert resolve_cache_dir(None) == tmp_path / "xdg" / "study"
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "env-cache"))
    assert resolve_cache_dir(None) == tmp_path / "env-cache"
    assert resolve_cache_dir(str(tmp_path / "flag-cache")) == tmp_path / "flag-cache"
    assert not any(tmp_path.iterdir())  # resolving creates nothing


def _offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_missing_csv_offline_says_what_to_do_and_writes_nothing(tmp_path, monkeypatch):
    _offline(monkeypatch)
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(MissingData) as err:
        covid_file(data)
    text = str(err.value)
    assert "\n" not in text and CONFIRMED_NAME in text and "download" in text
    assert list(data.iterdir()) == []  # no covid/ folder made in the data folder
    assert not list(tmp_path.rglob("*.part"))  # nothing half-written in the cache either


def test_csv_is_downloaded_into_the_cache_not_the_data_folder(tmp_path, monkeypatch):
    """The download path writes the file whole (served from a local file: no network in tests)."""
    src = tmp_path / "served.csv"
    src.write_text("Province/State,Country/Region,Lat,Long,1/22/20\n,A,0,0,1\n")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: open(src, "rb"))
    data = tmp_path / "data"
    data.mkdir()
    path = covid_file(data)
    assert path == tmp_path / "xdg" / "study" / "covid" / CONFIRMED_NAME
    assert path.read_text() == src.read_text()
    assert list(data.iterdir()) == []
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "mine"))
    assert covid_file(data, cache_dir=tmp_path / "flag") == tmp_path / "flag" / "covid" / CONFIRMED_NAME


def test_data_folder_first_then_the_cached_copy(tmp_path, monkeypatch):
    _offline(monkeypatch)
    data, cache = tmp_path / "data", tmp_path / "cache"
    (cache / "covid").mkdir(parents=True)
    (cache / "covid" / CONFIRMED_NAME).write_text("cached")
    data.mkdir()
    assert covid_file(data, cache_dir=cache) == cache / "covid" / CONFIRMED_NAME
    (data / "covid").mkdir()
    (data / "covid" / CONFIRMED_NAME).write_text("in the data folder")
    assert covid_file(data, cache_dir=cache) == data / "covid" / CONFIRMED_NAME


def test_missing_faces_names_kaggle(tmp_path):
    with pytest.raises(MissingData, match="anime-faces"):
        faces_source(tmp_path)
    assert list(tmp_path.iterdir()) == []
