"""Windows, model inputs and the train / validation / test splits, on the hand-known 5-country fixture."""
from __future__ import annotations

import numpy as np
import pytest

from covid_fixture import DAILY, confirmed_path, write_data_dir
from data.covid import daily_new_cases, load_confirmed
from data.errors import DataError
from data.sequence_data import CovidDataConfig, build_sequence_data
from data.windows import build_windows, inputs, latest_inputs, split_windows, time_cutoffs, weekday

FOUR = ["Algeria", "Australia", "Brazil", "Chile"]


@pytest.fixture()
def root(tmp_path):
    return write_data_dir(tmp_path)


@pytest.fixture()
def daily(root):
    return daily_new_cases(load_confirmed(confirmed_path(root)))


def test_windows_shapes_labels_and_metadata(daily):
    w = build_windows(daily, ["Brazil", "Chile"], 3, norm="none")
    assert w.x.shape == (2 * (11 - 3), 3, 1) and w.x.dtype == np.float32 and w.y.dtype == np.int64
    b = DAILY["Brazil"]
    np.testing.assert_array_equal(w.x[0, :, 0], b[:3])
    np.testing.assert_array_equal(w.raw[0], b[:3])
    assert w.y[0] == int(b[3] > b[2]) and str(w.end[0]) == "2020-01-25" and str(w.label_day[0]) == "2020-01-26"
    assert list(w.country) == [0] * 8 + [1] * 8
    cum = build_windows(daily, ["Chile"], 1, label="cumulative-increase", norm="none")
    np.testing.assert_array_equal(cum.y, (np.maximum(DAILY["Chile"][1:], 0) > 0).astype(int))


def test_normalisations(daily):
    raw = build_windows(daily, ["Brazil", "Chile"], 4, norm="none").x
    np.testing.assert_allclose(build_windows(daily, ["Brazil", "Chile"], 4, norm="log1p").x, np.log1p(raw), rtol=1e-6)
    mm = build_windows(daily, ["Brazil", "Chile"], 4, norm="minmax").x
    assert mm.min() == 0 and mm.max() == 1 and (mm.max(axis=1) == 1).all()
    cutoff = time_cutoffs(daily.dates, 4)[0]
    z = build_windows(daily, ["Brazil"], 4, norm="zscore").x
    train = np.asarray(DAILY["Brazil"], float)[daily.dates < cutoff]  # z-score statistics: training days only
    np.testing.assert_allclose(z[0, :, 0], (np.asarray(DAILY["Brazil"][:4]) - train.mean()) / train.std(), rtol=1e-5)


def test_relative_and_weekday_features():
    raw = np.array([[0.0, 3.0, 7.0], [5.0, 5.0, 5.0]])
    end = np.array(["2020-01-25", "2020-01-27"], dtype="datetime64[D]")  # a Saturday and a Monday
    x = inputs(raw, end, "relative+weekday")
    assert x.shape == (2, 3, 2 + 7) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0], np.log1p(raw[0]) - np.log1p(7.0), rtol=1e-6)  # window minus its last day
    np.testing.assert_allclose(x[0, :, 1], np.log1p(7.0), rtol=1e-6)  # the last day's level on every step
    np.testing.assert_array_equal(x[1, :, 0], 0.0)
    assert weekday(end).tolist() == [5, 0]
    assert x[0, :, 2:].argmax(1).tolist() == [3, 4, 5] and x[1, :, 2:].argmax(1).tolist() == [5, 6, 0]
    assert (x[:, :, 2:].sum(-1) == 1).all()
    counts = inputs(raw, end, "counts+weekday", norm="none")
    assert counts.shape == (2, 3, 8)
    np.testing.assert_array_equal(counts[..., 0], raw)


def test_time_split_orders_train_validation_test_by_label_day(daily):
    w = build_windows(daily, FOUR, 3)
    parts = split_windows(w, "time")
    day = w.label_day
    assert day[parts.train].max() < w.cutoffs[0] <= day[parts.val].min()
    assert day[parts.val].max() < w.cutoffs[1] <= day[parts.test].min()
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(w.y)))


def test_random_split_has_the_time_splits_sizes_and_is_seeded(daily):
    w = build_windows(daily, FOUR, 3)
    time, rand = split_windows(w, "time"), split_windows(w, "random", seed=1)
    assert [len(p) for p in rand] == [len(p) for p in time]
    assert sorted(np.concatenate(rand).tolist()) == list(range(len(w.y)))
    assert all(np.array_equal(a, b) for a, b in zip(rand, split_windows(w, "random", seed=1)))
    assert not all(np.array_equal(a, b) for a, b in zip(rand, split_windows(w, "random", seed=2)))


def test_country_split_holds_out_whole_countries(daily):
    w = build_windows(daily, FOUR, 3)
    parts = split_windows(w, "country", seed=3)
    sets = [set(w.country[p]) for p in parts]
    assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
    assert all(sets)
    with pytest.raises(DataError, match="at least 3 countries"):
        split_windows(build_windows(daily, ["Brazil", "Chile"], 3), "country")


def test_latest_inputs_skip_countries_without_data(daily):
    x, names = latest_inputs(daily, 5, norm="none")
    assert names == FOUR and x.shape == (4, 5, 1)
    np.testing.assert_array_equal(x[0, :, 0], DAILY["Algeria"][-5:])
    x, _ = latest_inputs(daily, 5, features="relative+weekday")
    assert x.shape == (4, 5, 9) and x[0, -1, 0] == 0.0


def test_build_sequence_data_on_fixture(root):
    d = build_sequence_data(CovidDataConfig(data_dir=str(root), threshold=0.9, seq_len=3, features="relative"))
    assert d.countries_c == ["Algeria", "Australia"]
    assert set(d.splits) == {"random", "time"} and len(d.y) == 16 == len(d.raw)
    for parts in d.splits.values():
        assert sorted(np.concatenate(parts).tolist()) == list(range(16))
    assert d.x.dtype == np.float32 and d.x.shape == (16, 3, 2) and d.y.dtype == np.int64
    x_val, y_val = d.part("val", "time")
    np.testing.assert_array_equal(y_val, d.y[d.splits["time"].val])
    assert d.prediction_date == "2020-02-03" and d.latest_iso2 == ["dz", "au", "br", "cl"]
    assert len(d.data_hash) == 16 and d.x_latest.shape == (4, 3, 2)


@pytest.mark.parametrize("kw, problem", [
    (dict(seq_len=9), "longer than the series"),
    (dict(train_frac=0.9, val_frac=0.1), "leaves no test part"),
    (dict(val_frac=0.0), "val_frac 0.0 must be strictly between 0 and 1"),
    (dict(features="fourier"), "unknown feature set 'fourier'"),
])
def test_bad_split_or_features_is_one_line(root, kw, problem):
    with pytest.raises(DataError) as err:
        build_sequence_data(CovidDataConfig(data_dir=str(root), threshold=0.9, **{"seq_len": 3, **kw}))
    assert "\n" not in str(err.value) and problem in str(err.value)
