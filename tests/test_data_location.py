"""The data setting: flag over environment over the per-user cache; read-only data folders stay untouched."""
from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from data.errors import DataError
from data.location import ENV_VAR, cache_dir, covid_file, faces_source, resolve_data_dir


def test_flag_beats_env_beats_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv(ENV_VAR)
    assert resolve_data_dir(None).name == "study"


def test_read_only_data_folder_gets_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o555)
    try:
        where = cache_dir(data)
    finally:
        data.chmod(0o755)
    assert not (data / "cache").exists()
    assert tmp_path / "xdg" in where.parents
    assert cache_dir(tmp_path / "writable") == tmp_path / "writable" / "cache"


def test_missing_csv_offline_says_what_to_do(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(DataError) as err:
        covid_file(tmp_path)
    text = str(err.value)
    assert "\n" not in text and "time_series_covid19_confirmed_global.csv" in text and "download" in text
    assert not list(tmp_path.rglob("*.part"))  # nothing half-written


def test_csv_is_downloaded_when_missing(tmp_path, monkeypatch):
    """The download path writes the file whole (served from a local file: no network in tests)."""
    src = tmp_path / "served.csv"
    src.write_text("Province/State,Country/Region,Lat,Long,1/22/20\n,A,0,0,1\n")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: open(src, "rb"))
    path = covid_file(tmp_path / "d")
    assert path == tmp_path / "d" / "covid" / "time_series_covid19_confirmed_global.csv"
    assert path.read_text() == src.read_text()


def test_missing_faces_names_kaggle(tmp_path):
    with pytest.raises(DataError, match="anime-faces"):
        faces_source(tmp_path)
