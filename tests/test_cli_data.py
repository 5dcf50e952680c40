"""`study data check|prepare` through study.cli.main: the summary on a fixture, and bad input -> one line, exit 2."""
from __future__ import annotations

import time

import pytest

import data.check
import data.location
from covid_fixture import DATES, confirmed_path, csv_text, write_data_dir, write_faces_zip
from data.sequence_data import CovidDataConfig, build_sequence_data
from study.cli import main


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """A missing CSV would otherwise be downloaded from the CSSE repository; tests must never touch the network."""
    def refuse(url, dest, timeout=20.0):
        raise OSError("offline in tests")

    monkeypatch.setattr(data.location, "_download", refuse)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("study: error: ")
    return err.removeprefix("study: error: ")


def test_check_prints_the_summary(tmp_path, capsys):
    root = write_data_dir(tmp_path)
    write_faces_zip(root, n=3)
    assert main(["data", "check", "--data-dir", str(root), "--seq-len", "3"]) == 0
    out = capsys.readouterr().out
    for expected in ("countries:              5", "days:                   12", "revisions clipped:      1",
                     "zero-variance countries: 1 (Diamond Princess)", "unmapped countries:     1 (Diamond Princess)",
                     "reference Algeria > 0.6", "any-pair > 0.7", "k-partners >= 40 partners > 0.55",
                     "images:                 found 3, skipped 0", "image cache:"):
        assert expected in out, expected
    assert "|C|=0  (set C is empty" in out  # k-partners 40 cannot be met by 5 countries: reported, not fatal


def test_prepare_builds_the_cache(tmp_path, capsys):
    root = write_data_dir(tmp_path)
    write_faces_zip(root, n=2)
    assert main(["data", "prepare", "--data-dir", str(root), "--size", "16"]) == 0
    out = capsys.readouterr().out
    assert "found 2, skipped 0" in out and "image cache:" in out


def _h(dates):
    return ",".join(["Province/State", "Country/Region", "Lat", "Long", *dates])


BAD_CSV = {
    "empty": ("", "empty file"),
    "no-dates": (_h([]) + "\n,Algeria,1,2\n", "no date columns"),
    "non-numeric": (csv_text().replace(",0,1,3,", ",0,x1,3,", 1), "non-numeric count 'x1'"),
    "duplicated": (csv_text(DATES[:5] + ["1/26/20"] + DATES[6:]), "duplicated"),
    "out-of-order": (csv_text(DATES[:3] + [DATES[4], DATES[3]] + DATES[5:]), "out of order"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv_exits_2_with_one_line(tmp_path, capsys, case):
    text, problem = BAD_CSV[case]
    root = write_data_dir(tmp_path, csv=text)
    assert main(["data", "check", "--data-dir", str(root)]) == 2
    line = _error_line(capsys)
    assert line.startswith(str(confirmed_path(root)) + ": ") and problem in line


def test_missing_csv_exits_2_naming_the_file(tmp_path, capsys):
    (tmp_path / "covid").mkdir()
    assert main(["data", "check", "--data-dir", str(tmp_path)]) == 2
    line = _error_line(capsys)
    assert line.startswith(str(confirmed_path(tmp_path)) + ": missing")


@pytest.mark.parametrize("seq_len,problem", [("0", "must be an integer >= 1"), ("50", "longer than the series")])
def test_bad_seq_len_exits_2(tmp_path, capsys, seq_len, problem):
    root = write_data_dir(tmp_path)
    assert main(["data", "check", "--data-dir", str(root), "--seq-len", seq_len]) == 2
    line = _error_line(capsys)
    assert line.startswith(str(confirmed_path(root)) + ": ") and problem in line


@pytest.mark.parametrize("strategy,problem", [
    (("any-pair", 1.5, {}), "threshold 1.5 is outside [-1, 1]"),
    (("reference", 0.6, {"reference": "algeria"}), "did you mean 'Algeria'"),
])
def test_bad_selection_in_check_exits_2(tmp_path, capsys, monkeypatch, strategy, problem):
    root = write_data_dir(tmp_path)
    monkeypatch.setattr(data.check, "EXAMPLE_STRATEGIES", (strategy,))
    assert main(["data", "check", "--data-dir", str(root), "--seq-len", "3"]) == 2
    line = _error_line(capsys)
    assert line.startswith(str(confirmed_path(root)) + ": ") and problem in line


@pytest.mark.parametrize("field,value,problem", [
    ("split", "by-week", "unknown split"), ("label", "up", "unknown label rule"), ("norm", "l2", "unknown normalisation"),
])
def test_unknown_option_names_exit_2(tmp_path, capsys, monkeypatch, field, value, problem):
    """`data check` has no flags for these (the study config sets them), so route a config through the CLI's handler."""
    root = write_data_dir(tmp_path)

    def check_with_config(data_dir, seq_len=30, size=64):
        build_sequence_data(CovidDataConfig(data_dir=data_dir, seq_len=3, **{field: value}))
        return "unreachable"

    monkeypatch.setattr(data.check, "run_check", check_with_config)
    assert main(["data", "check", "--data-dir", str(root)]) == 2
    line = _error_line(capsys)
    assert line.startswith(str(confirmed_path(root)) + ": ") and problem in line


@pytest.mark.integration
def test_real_check_covid_summary_is_fast(real_data_dir):
    start = time.perf_counter()
    summary = data.check.covid_summary(str(real_data_dir), seq_len=30)
    assert time.perf_counter() - start < 10
    assert summary["countries"] == 201 and summary["days"] == 1143 and len(summary["unmapped"]) == 4
    sizes = {row["strategy"]: row["size"] for row in summary["strategies"]}
    assert sizes["any-pair"] == 79 and all(0 < row["positive"] < 1 for row in summary["strategies"] if row["size"])
