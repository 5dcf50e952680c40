"""COVID data layer: parsing, daily cases, correlation, set C, iso2, bad input; real-data checks (windows: test_data_windows.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covid_fixture import COUNTRIES, DATES, DAILY, confirmed_path, csv_text, write_data_dir
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
