"""COVID data layer: parsing, daily cases, correlation, set C, iso2, bad input; real-data checks (windows: test_data_windows.py)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from covid_fixture import COUNTRIES, DATES, DAILY, LOOKUP, confirmed_path, csv_text, with_cell, write_data_dir
from data.correlation import pearson_matrix, select_countries
from data.countries import iso2_codes
from data.covid import daily_new_cases, load_confirmed
from data.errors import DataError
from data.sequence_data import CovidDataConfig, build_sequence_data
from data.windows import build_windows, split_windows


@pytest.fixture()
def root(tmp_path):
    return write_data_dir(tmp_path)


@pytest.fixture()
def daily(root):
    return daily_new_cases(load_confirmed(confirmed_path(root)))


def test_parse_sums_provinces_and_keeps_mean_coordinates(root):
    s = load_confirmed(confirmed_path(root))
    assert s.countries == COUNTRIES
    assert s.dates.dtype == np.dtype("datetime64[D]") and len(s.dates) == 12
    assert str(s.dates[0]) == "2020-01-22" and str(s.dates[-1]) == "2020-02-02"
    aus = s.countries.index("Australia")
    assert s.cumulative[aus, -1] == 2 * sum(range(1, 12))
    assert s.lat[aus] == pytest.approx((-33.9 - 37.8) / 2) and s.long[aus] == pytest.approx((151.2 + 145.0) / 2)


def test_daily_cases_revision_rule_clip_and_keep(root):
    s = load_confirmed(confirmed_path(root))
    clip, keep = daily_new_cases(s), daily_new_cases(s, "keep")
    chile = s.countries.index("Chile")
    assert clip.revisions == keep.revisions == 1
    assert keep.values[chile, 2] == -1 and clip.values[chile, 2] == 0
    assert clip.values.min() == 0 and len(clip.dates) == 11 and str(clip.dates[0]) == "2020-01-23"
    np.testing.assert_array_equal(clip.values[0], DAILY["Algeria"])


@pytest.mark.parametrize("spec,days", [("full", 12), ("homework", 12), ("2020-01-25..2020-01-30", 6)])
def test_date_ranges(root, spec, days):
    assert len(load_confirmed(confirmed_path(root), spec).dates) == days


def test_pearson_matches_pandas_and_reports_zero_variance(daily):
    corr, zero = pearson_matrix(daily.values)
    assert zero == [COUNTRIES.index("Diamond Princess")]
    assert np.isnan(corr[zero[0]]).all() and np.isnan(corr[:, zero[0]]).all()
    ok = [i for i in range(len(COUNTRIES)) if i not in zero]
    expected = pd.DataFrame(daily.values[ok].T).corr().to_numpy()
    np.testing.assert_allclose(corr[np.ix_(ok, ok)], expected, atol=1e-12)
    assert corr[0, 1] == pytest.approx(1.0)  # Algeria vs Australia: same shape, double size


def test_selection_strategies(daily):
    corr, _ = pearson_matrix(daily.values)
    names = daily.countries
    assert select_countries(corr, names, "reference", 0.9, reference="Algeria") == ["Algeria", "Australia"]
    assert select_countries(corr, names, "any-pair", 0.9) == ["Algeria", "Australia"]
    assert "Diamond Princess" not in select_countries(corr, names, "any-pair", -1.0)
    assert select_countries(corr, names, "k-partners", -1.0, min_partners=3) == ["Algeria", "Australia", "Brazil", "Chile"]
    with pytest.raises(DataError, match="lower threshold"):
        select_countries(corr, names, "any-pair", 1.0)


def test_iso2_from_country_level_rows(root):
    mapped, unmapped = iso2_codes(root / "covid" / "UID_ISO_FIPS_LookUp_Table.csv", COUNTRIES + ["Namibia"])
    assert mapped == {"Algeria": "dz", "Australia": "au", "Brazil": "br", "Chile": "cl", "Namibia": "na"}
    assert unmapped == ["Diamond Princess"]


# ---- bad input: every case is a one-line DataError naming the file ---------------------------------------------

def _header(dates):
    return ",".join(["Province/State", "Country/Region", "Lat", "Long", *dates])


BAD_CSV = {
    "empty": ("", "empty file"),
    "no-dates": (_header([]) + "\n,Algeria,1,2\n", "no date columns"),
    "non-numeric": (csv_text().replace(",0,1,3,", ",0,abc,3,", 1), "non-numeric count 'abc'"),
    "duplicated": (csv_text(DATES[:5] + ["1/26/20"] + DATES[6:]), "duplicated"),
    "duplicated-spelling": (csv_text(DATES[:5] + ["01/26/20"] + DATES[6:]), "duplicated date 2020-01-26"),
    "out-of-order": (csv_text(DATES[:3] + [DATES[4], DATES[3]] + DATES[5:]), "out of order"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv_is_one_line_naming_the_file(tmp_path, case):
    text, problem = BAD_CSV[case]
    root = write_data_dir(tmp_path, csv=text)
    with pytest.raises(DataError) as err:
        load_confirmed(confirmed_path(root))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(confirmed_path(root)) + ": ") and problem in msg


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="missing file") as err:
        load_confirmed(tmp_path / "nope.csv")
    assert str(err.value).startswith(str(tmp_path / "nope.csv"))


# Data rows (0-based): Algeria, New South Wales, Victoria, Brazil, Chile, Diamond Princess; day 4 is 1/26/20.
ABSURD_COUNTS = {
    "inf": ("inf", "count 'inf' in data row 4 (Brazil), column 1/26/20 is not finite"),
    "-inf": ("-inf", "count '-inf' in data row 4 (Brazil), column 1/26/20 is not finite"),
    "1e400": ("1e400", "count '1e400' in data row 4 (Brazil), column 1/26/20 is not finite"),
    "1e300": ("1e300", "count '1e300' in data row 4 (Brazil), column 1/26/20 is above 1e+10, more than the world"),
    "2e10": ("20000000000", "count '20000000000' in data row 4 (Brazil), column 1/26/20 is above 1e+10"),
    "nan": ("nan", "non-numeric count 'nan' in data row 4 (Brazil), column 1/26/20"),
    "NaN": ("NaN", "non-numeric count 'NaN' in data row 4 (Brazil), column 1/26/20"),
    "empty": ("", "non-numeric count '' (a blank cell, or a row shorter than the header) in data row 4 (Brazil)"),
}


@pytest.mark.parametrize("case", sorted(ABSURD_COUNTS))
def test_non_finite_or_absurd_counts_name_country_row_and_day(tmp_path, case):
    value, problem = ABSURD_COUNTS[case]
    root = write_data_dir(tmp_path, csv=with_cell(csv_text(), 3, 4, value))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning on the way to the error
        with pytest.raises(DataError) as err:
            load_confirmed(confirmed_path(root))
    msg = str(err.value)
    assert "\n" not in msg and msg == f"{confirmed_path(root)}: {msg.split(': ', 1)[1]}" and problem in msg, msg


def test_a_short_row_is_a_missing_count(tmp_path):
    text = csv_text().split("\n")
    text[2] = text[2].rsplit(",", 1)[0]  # New South Wales loses its last day
    root = write_data_dir(tmp_path, csv="\n".join(text))
    with pytest.raises(DataError, match=r"non-numeric count '' \(a blank cell, or a row shorter than the header\) "
                                        r"in data row 2 \(Australia\), column 2/2/20"):
        load_confirmed(confirmed_path(root))


def test_the_largest_plausible_count_passes(tmp_path):
    root = write_data_dir(tmp_path, csv=with_cell(csv_text(), 3, 11, "10000000000"))
    assert load_confirmed(confirmed_path(root)).cumulative.max() == 1e10


def test_valid_data_gives_no_numpy_warnings(root):
    """Daily differences and correlations of valid data (with a zero-variance country) warn about nothing."""
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        for spec in ("full", "homework", "2020-01-24..2020-01-29"):
            daily = daily_new_cases(load_confirmed(confirmed_path(root), spec))
            corr, zero = pearson_matrix(daily.values)
            assert zero == [COUNTRIES.index("Diamond Princess")] and np.isfinite(np.delete(corr, zero, 0)[:, 1]).all()


ENCODING = {
    "data-row": (lambda t: t.replace("Chile", "Chil\u00e9"), "byte 0xe9 at line 6 (byte offset"),
    "header": (lambda t: t.replace("Lat,", "L\u00e4t,", 1), "byte 0xe4 at line 1 (byte offset 31)"),
    "last-cell": (lambda t: t.rstrip("\n") + "\u00b0\n", "byte 0xb0 at line 7"),
}


@pytest.mark.parametrize("case", sorted(ENCODING))
def test_latin1_byte_anywhere_is_one_line_with_its_line(tmp_path, case):
    edit, problem = ENCODING[case]
    root = write_data_dir(tmp_path)
    confirmed_path(root).write_bytes(edit(csv_text()).encode("latin-1"))
    with pytest.raises(DataError) as err:
        load_confirmed(confirmed_path(root))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{confirmed_path(root)}: not UTF-8 text: ") and problem in msg, msg


def test_a_utf8_bom_and_utf8_names_are_fine(tmp_path):
    root = write_data_dir(tmp_path)
    confirmed_path(root).write_bytes(b"\xef\xbb\xbf" + csv_text().replace("Chile", "Chil\u00e9").encode())
    assert "Chil\u00e9" in load_confirmed(confirmed_path(root)).countries


LOOKUP_FILE = "UID_ISO_FIPS_LookUp_Table.csv"
BAD_LOOKUP = {
    "latin1": (LOOKUP.replace("Namibia", "Nam\u00efbia").encode("latin-1"), "not UTF-8 text: byte 0xef at line 8"),
    "binary": (bytes(range(256)) * 40, "not UTF-8 text: byte 0x80 at line 2 (byte offset 128)"),
    "png": (b"\x89PNG\r\n\x1a\n" + bytes(100), "not UTF-8 text: byte 0x89 at line 1 (byte offset 0)"),
    "control-bytes": (b"\x00\x01\x02" * 300, "not a CSSE lookup table: missing column(s)"),
    "wrong-columns": (b"a,b,c\n1,2,3\n", "not a CSSE lookup table: missing column(s) iso2, Admin2"),
    "empty": (b"", "empty file"),
    "blank": (b"\n \n\n", "empty file"),
    "header-only": (LOOKUP.splitlines()[0].encode() + b"\n", "no data rows"),
    "ragged": (LOOKUP.encode() + b"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n", "malformed CSV"),
}


@pytest.mark.parametrize("case", sorted(BAD_LOOKUP))
def test_garbage_lookup_table_is_one_line_naming_it(tmp_path, case):
    body, problem = BAD_LOOKUP[case]
    path = tmp_path / LOOKUP_FILE
    path.write_bytes(body)
    with pytest.raises(DataError) as err:
        iso2_codes(path, COUNTRIES)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and problem in msg, msg


def test_missing_lookup_table(tmp_path):
    with pytest.raises(DataError, match="missing file"):
        iso2_codes(tmp_path / LOOKUP_FILE, COUNTRIES)


BAD_CONFIG = {
    "L-too-long": (dict(seq_len=10), "longer than the series"),
    "L-zero": (dict(seq_len=0), "must be an integer >= 1"),
    "threshold-high": (dict(threshold=1.5), "outside [-1, 1]"),
    "threshold-low": (dict(threshold=-2.0), "outside [-1, 1]"),
    "reference": (dict(selection="reference", reference="Algera"), "did you mean 'Algeria'"),
    "split": (dict(split="by-week"), "unknown split 'by-week'"),
    "label": (dict(label="up"), "unknown label rule 'up'"),
    "norm": (dict(norm="l2"), "unknown normalisation 'l2'"),
    "date-range": (dict(date_range="2020"), "bad date range"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIG))
def test_bad_config_is_one_line_naming_the_file(root, case):
    kw, problem = BAD_CONFIG[case]
    with pytest.raises(DataError) as err:
        build_sequence_data(CovidDataConfig(data_dir=str(root), **{"seq_len": 3, **kw}))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(confirmed_path(root)) + ": ") and problem in msg


# ---- the real files (STUDY_DATA_DIR) ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real(real_data_dir):
    series = load_confirmed(real_data_dir / "covid" / "time_series_covid19_confirmed_global.csv")
    return series, daily_new_cases(series)


@pytest.mark.integration
def test_real_counts_match_readme(real):
    series, daily = real
    assert len(series.countries) == 201 and len(series.dates) == 1143
    assert str(series.dates[0]) == "2020-01-22" and str(series.dates[-1]) == "2023-03-09"
    assert series.cumulative[series.countries.index("US"), -1] == 103_802_702
    assert series.cumulative[:, -1].sum() == 676_570_149 and daily.revisions > 0


@pytest.mark.integration
def test_real_iso2_for_all_but_the_non_countries(real, real_data_dir):
    mapped, unmapped = iso2_codes(real_data_dir / "covid" / "UID_ISO_FIPS_LookUp_Table.csv", real[0].countries)
    assert sorted(unmapped) == ["Diamond Princess", "MS Zaandam", "Summer Olympics 2020", "Winter Olympics 2022"]
    assert len(mapped) == 197 and mapped["US"] == "us" and mapped["Namibia"] == "na"


@pytest.mark.integration
def test_real_correlation_matches_pandas(real):
    daily = real[1]
    pick = [daily.countries.index(c) for c in ("Algeria", "France", "Germany", "US", "Japan")]
    corr, _ = pearson_matrix(daily.values)
    expected = pd.DataFrame(daily.values[pick].T).corr().to_numpy()
    np.testing.assert_allclose(corr[np.ix_(pick, pick)], expected, atol=1e-10)


@pytest.mark.integration
def test_real_windows_and_splits(real):
    daily = real[1]
    corr, _ = pearson_matrix(daily.values)
    chosen = select_countries(corr, daily.countries, "any-pair", 0.7)
    w = build_windows(daily, chosen, 30, norm="zscore")
    parts = split_windows(w, "random")
    assert w.x.shape == (len(chosen) * (1142 - 30), 30, 1)
    assert sum(map(len, parts)) == len(w.y) and np.isfinite(w.x).all()


@pytest.mark.integration
def test_real_data_gives_no_numpy_warnings(real_data_dir):
    """The real file on both ranges the project uses: differences and correlations raise no floating-point warning."""
    path = real_data_dir / "covid" / "time_series_covid19_confirmed_global.csv"
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        for spec in ("full", "homework"):
            daily = daily_new_cases(load_confirmed(path, spec))
            corr, zero = pearson_matrix(daily.values)
            keep = np.setdiff1d(np.arange(len(daily.countries)), zero)
            assert np.isfinite(corr[np.ix_(keep, keep)]).all()
