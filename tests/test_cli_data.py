"""`study data check|prepare` through study.cli.main: one dataset or both, the date range it used, the cache folder,
and bad input -> one line, exit 2, the data folder untouched."""
from __future__ import annotations

import time

import pytest

import data.check
import data.location
from covid_fixture import (
    DATES, LOOKUP, confirmed_path, csv_text, snapshot, with_cell, write_data_dir, write_faces_zip,
)
from data.sequence_data import CovidDataConfig, build_sequence_data
from study.cli import main


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """A missing CSV would otherwise be downloaded from the CSSE repository; tests must never touch the network.
    The cache folder is a tmp folder, so nothing here fills the real user cache."""
    def refuse(url, dest, timeout=20.0):
        raise OSError("offline in tests")

    monkeypatch.setattr(data.location, "_download", refuse)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("STUDY_DATA_DIR", raising=False)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("study: error: ")
    return err.removeprefix("study: error: ")


def test_check_prints_the_summary(tmp_path, capsys):
    root = write_data_dir(tmp_path / "data")
    write_faces_zip(root, n=3)
    before = snapshot(root)
    assert main(["data", "check", "--data-dir", str(root), "--seq-len", "3"]) == 0
    out = capsys.readouterr().out
    for expected in ("countries:              5", "days:                   12", "revisions clipped:      1",
                     "zero-variance countries: 1 (Diamond Princess)", "unmapped countries:     1 (Diamond Princess)",
                     "set C at L=3 on 2020-01-22..2020-02-02 (homework range), label next-higher:",
                     "reference Algeria > 0.6", "any-pair > 0.7", "k-partners >= 40 partners > 0.55",
                     "images:                 found 3, skipped 0", f"image cache:            {tmp_path / 'cache'}"):
        assert expected in out, expected
    assert "|C|=0  (set C is empty" in out  # k-partners 40 cannot be met by 5 countries: reported, not fatal
    assert snapshot(root) == before  # the check only reads the data folder


def test_prepare_builds_the_cache_in_the_cache_folder(tmp_path, capsys):
    root = write_data_dir(tmp_path / "data")
    write_faces_zip(root, n=2)
    before = snapshot(root)
    assert main(["data", "prepare", "--data-dir", str(root), "--size", "16", "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "found 2, skipped 0" in out and f"image cache: {tmp_path / 'c' / 'faces'}" in out
    assert "STUDY_CACHE_DIR=" in out  # says how a study finds a cache put elsewhere
    assert len(list((tmp_path / "c" / "faces").glob("*.npy"))) == 1
    assert snapshot(root) == before


# ---- one dataset, or both ------------------------------------------------------------------------------------

def test_covid_alone_is_checked_without_faces(tmp_path, capsys):
    root = write_data_dir(tmp_path)
    assert main(["data", "check", "covid", "--data-dir", str(root), "--seq-len", "3"]) == 0
    captured = capsys.readouterr()
    assert "any-pair > 0.7" in captured.out and "images" not in captured.out and captured.err == ""


def test_faces_alone_is_checked_without_covid(tmp_path, capsys):
    write_faces_zip(tmp_path, n=2)
    assert main(["data", "check", "faces", "--data-dir", str(tmp_path), "--size", "16"]) == 0
    out = capsys.readouterr().out
    assert "images:                 found 2, skipped 0" in out and "covid" not in out


def test_no_argument_reports_missing_faces_in_one_line_and_passes(tmp_path, capsys):
    root = write_data_dir(tmp_path)
    assert main(["data", "check", "--data-dir", str(root), "--seq-len", "3"]) == 0
    captured = capsys.readouterr()
    missing = [line for line in captured.out.splitlines() if line.startswith("images:")]
    assert len(missing) == 1 and missing[0].startswith("images:                 missing (")
    assert "anime-faces" in missing[0] and str(root / "anime_faces") in missing[0]
    assert "any-pair > 0.7" in captured.out and captured.err == ""


def test_no_argument_reports_missing_covid_and_checks_the_faces(tmp_path, capsys):
    write_faces_zip(tmp_path, n=2)
    assert main(["data", "check", "--data-dir", str(tmp_path), "--size", "16"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("covid:")][0].startswith("covid:                  missing (")
    assert "found 2, skipped 0" in out
    assert not (tmp_path / "covid").exists()  # the failed download made no folder in the data folder


@pytest.mark.parametrize("dataset,problem", [("faces", "missing; download the Kaggle"), ("covid", "missing;")])
def test_a_named_missing_dataset_exits_2(tmp_path, capsys, dataset, problem):
    assert main(["data", "check", dataset, "--data-dir", str(tmp_path)]) == 2
    line = _error_line(capsys)
    assert line.startswith(str(tmp_path / ("anime_faces" if dataset == "faces" else "covid"))) and problem in line


def test_nothing_there_exits_2(tmp_path, capsys):
    (tmp_path / "covid").mkdir()
    assert main(["data", "check", "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "covid:                  missing (" in captured.out and "images:                 missing (" in captured.out
    err = captured.err.strip()
    assert "\n" not in err and err == f"study: error: {tmp_path}: no dataset found (covid and images both missing); " \
                                      "check --data-dir / $STUDY_DATA_DIR"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_mistyped_data_folder_is_one_line_and_not_created(tmp_path, capsys, monkeypatch, how):
    wrong = tmp_path / "shared" / "data"
    args = ["data", "check"] + (["--data-dir", str(wrong)] if how == "flag" else [])
    if how == "env":
        monkeypatch.setenv("STUDY_DATA_DIR", str(wrong))
    assert main(args) == 2
    line = _error_line(capsys)
    assert line.startswith(f"{wrong}: data folder does not exist") and "--data-dir / $STUDY_DATA_DIR" in line
    assert not (tmp_path / "shared").exists()


# ---- the date range ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,header", [
    (None, "on 2020-01-22..2020-02-02 (homework range)"),
    ("full", "on 2020-01-22..2020-02-02 (full range)"),
    ("2020-01-24..2020-01-31", "on 2020-01-24..2020-01-31 (given range)"),
])
def test_the_set_c_header_names_the_date_range(tmp_path, capsys, spec, header):
    root = write_data_dir(tmp_path)
    args = ["data", "check", "covid", "--data-dir", str(root), "--seq-len", "3"]
    assert main(args + (["--date-range", spec] if spec else [])) == 0
    out = capsys.readouterr().out
    assert f"set C at L=3 {header}, label next-higher:" in out
    assert "days:                   12 (2020-01-22..2020-02-02" in out  # the file's own span is still shown


def test_the_date_range_changes_set_c(tmp_path, capsys):
    """Set C and the windows are computed on the range asked for, not on the whole file."""
    root = write_data_dir(tmp_path)
    summaries = {spec: data.check.covid_summary(str(root), 3, spec) for spec in ("full", "2020-01-22..2020-01-29")}
    assert summaries["full"]["range_days"] == 12 and summaries["2020-01-22..2020-01-29"]["range_days"] == 8
    assert summaries["full"]["strategies"] != summaries["2020-01-22..2020-01-29"]["strategies"]


def test_bad_date_range_exits_2(tmp_path, capsys):
    root = write_data_dir(tmp_path)
    assert main(["data", "check", "covid", "--data-dir", str(root), "--date-range", "2020"]) == 2
    line = _error_line(capsys)
    assert line.startswith(str(confirmed_path(root)) + ": bad date range '2020'")


# ---- bad input: one line, exit 2 -----------------------------------------------------------------------------

def _h(dates):
    return ",".join(["Province/State", "Country/Region", "Lat", "Long", *dates])


BAD_CSV = {
    "empty": ("", "empty file"),
    "no-dates": (_h([]) + "\n,Algeria,1,2\n", "no date columns"),
    "non-numeric": (csv_text().replace(",0,1,3,", ",0,x1,3,", 1), "non-numeric count 'x1'"),
    "duplicated": (csv_text(DATES[:5] + ["1/26/20"] + DATES[6:]), "duplicated"),
    "out-of-order": (csv_text(DATES[:3] + [DATES[4], DATES[3]] + DATES[5:]), "out of order"),
    "inf": (with_cell(csv_text(), 3, 4, "inf"), "count 'inf' in data row 4 (Brazil), column 1/26/20 is not finite"),
    "1e300": (with_cell(csv_text(), 3, 4, "1e300"), "count '1e300' in data row 4 (Brazil), column 1/26/20 is above"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
@pytest.mark.parametrize("named", [True, False])
def test_bad_csv_exits_2_with_one_line(tmp_path, capsys, case, named):
    text, problem = BAD_CSV[case]
    root = write_data_dir(tmp_path, csv=text)
    assert main(["data", "check", *(["covid"] if named else []), "--data-dir", str(root)]) == 2
    line = _error_line(capsys)
    assert line.startswith(str(confirmed_path(root)) + ": ") and problem in line


def _latin1_in_row(root):
    text = csv_text().replace("Chile", "Chil\u00e9")  # a data row (Chile's), not the header
    confirmed_path(root).write_bytes(text.encode("latin-1"))


def _latin1_in_header(root):
    confirmed_path(root).write_bytes(csv_text().replace("Lat,", "L\u00e4t,", 1).encode("latin-1"))


LOOKUP_PATH = "UID_ISO_FIPS_LookUp_Table.csv"
BAD_COVID_FILES = {
    "csv-latin1-row": (_latin1_in_row, "time_series_covid19_confirmed_global.csv", "byte 0xe9 at line 6"),
    "csv-latin1-header": (_latin1_in_header, "time_series_covid19_confirmed_global.csv", "byte 0xe4 at line 1"),
    "lookup-latin1": (lambda r: (r / "covid" / LOOKUP_PATH).write_bytes(
        LOOKUP.replace("Namibia", "Nam\u00efbia").encode("latin-1")), LOOKUP_PATH, "byte 0xef at line 8"),
    "lookup-binary": (lambda r: (r / "covid" / LOOKUP_PATH).write_bytes(bytes(range(256)) * 40), LOOKUP_PATH,
                      "not UTF-8"),
    "lookup-nul": (lambda r: (r / "covid" / LOOKUP_PATH).write_bytes(b"\x00\x01\x02" * 300), LOOKUP_PATH,
                   "not a CSSE lookup table"),
    "lookup-columns": (lambda r: (r / "covid" / LOOKUP_PATH).write_text("a,b,c\n1,2,3\n"), LOOKUP_PATH,
                       "missing column(s) iso2, Admin2, Province_State, Country_Region"),
    "lookup-empty": (lambda r: (r / "covid" / LOOKUP_PATH).write_text(""), LOOKUP_PATH, "empty file"),
    "lookup-blank": (lambda r: (r / "covid" / LOOKUP_PATH).write_text("\n\n  \n"), LOOKUP_PATH, "empty file"),
    "lookup-header-only": (lambda r: (r / "covid" / LOOKUP_PATH).write_text(LOOKUP.splitlines()[0] + "\n"),
                           LOOKUP_PATH, "no data rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_COVID_FILES))
def test_bad_encoding_or_garbage_lookup_exits_2_with_one_line(tmp_path, capsys, case):
    spoil, name, problem = BAD_COVID_FILES[case]
    root = write_data_dir(tmp_path)
    spoil(root)
    assert main(["data", "check", "covid", "--data-dir", str(root), "--seq-len", "3"]) == 2
    line = _error_line(capsys)
    assert line.startswith(str(root / "covid" / name) + ": ") and problem in line, line


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

    def summary_with_config(data_dir, seq_len=30, date_range="homework", cache_dir=None):
        build_sequence_data(CovidDataConfig(data_dir=data_dir, seq_len=3, **{field: value}))
        return "unreachable"

    monkeypatch.setattr(data.check, "covid_summary", summary_with_config)
    assert main(["data", "check", "covid", "--data-dir", str(root)]) == 2
    line = _error_line(capsys)
    assert line.startswith(str(confirmed_path(root)) + ": ") and problem in line


# ---- the real data ---------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_real_check_covid_summary_is_fast(real_data_dir):
    start = time.perf_counter()
    summary = data.check.covid_summary(str(real_data_dir), seq_len=30)
    full = data.check.covid_summary(str(real_data_dir), seq_len=30, date_range="full")
    assert time.perf_counter() - start < 20
    assert summary["countries"] == 201 and summary["days"] == 1143 and len(summary["unmapped"]) == 4
    assert (summary["range_first"], summary["range_last"]) == ("2020-01-22", "2020-05-22")
    sizes = {row["strategy"]: row["size"] for row in summary["strategies"]}
    assert sizes["any-pair"] == 123 and all(0 < row["positive"] < 1 for row in summary["strategies"] if row["size"])
    assert {row["strategy"]: row["size"] for row in full["strategies"]}["any-pair"] == 79


@pytest.mark.integration
def test_real_covid_check_through_the_cli(real_data_dir, capsys):
    assert main(["data", "check", "covid", "--data-dir", str(real_data_dir)]) == 0
    out = capsys.readouterr().out
    assert "set C at L=30 on 2020-01-22..2020-05-22 (homework range), label next-higher:" in out
    assert "any-pair > 0.7                       |C|=123" in out
