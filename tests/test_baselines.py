"""The baselines: fitted on the training part only, on the models' own windows and splits, each rule as stated."""
from __future__ import annotations

import numpy as np
import pytest

from data.sequence_data import SequenceData
from data.windows import Split
from trainables.baselines import features, fit_baselines


def data_with(raw: np.ndarray, y: np.ndarray, label_day: np.ndarray, label: str = "next-higher") -> SequenceData:
    n = len(y)
    a, b = int(0.6 * n), int(0.8 * n)
    time = Split(np.arange(a), np.arange(a, b), np.arange(b, n))
    perm = np.random.default_rng(0).permutation(n)
    rand = Split(np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:]))
    return SequenceData(x=raw[..., None].astype(np.float32), y=y, raw=raw, label_day=label_day, split="random",
                        splits={"random": rand, "time": time}, x_latest=raw[:1, :, None].astype(np.float32),
                        latest_countries=["A"], latest_iso2=["aa"], prediction_date="2020-01-01",
                        countries_c=["A"], data_hash="0" * 16, label=label)


def test_weekly_rule_and_majority_are_exactly_their_rules():
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 100, (200, 9)).astype(float)
    y = (rng.random(200) < 0.3).astype(np.int64)
    d = data_with(raw, y, np.arange(200).astype("datetime64[D]"))
    rows = {(r["baseline"], r["split"]): r for r in fit_baselines(d, ("majority", "weekly"))}
    weekly = (raw[:, 2] > raw[:, 8]).astype(int)  # index L-7 = the label day's weekday one week before
    for split_name, split in d.splits.items():
        assert rows[("weekly", split_name)]["test_acc"] == pytest.approx(np.mean(weekly[split.test] == y[split.test]))
        majority = int(y[split.train].mean() > 0.5)
        assert rows[("majority", split_name)]["val_acc"] == pytest.approx(np.mean(y[split.val] == majority))
        assert rows[("majority", split_name)]["test_pred_positive_rate"] == majority


def test_weekly_rule_needs_a_week_of_inputs():
    d = data_with(np.ones((50, 6)), np.zeros(50, np.int64), np.arange(50).astype("datetime64[D]"))
    assert {r["baseline"] for r in fit_baselines(d, ("majority", "weekly"))} == {"majority"}


def test_features_are_relative_to_the_last_day_plus_level_and_weekday():
    raw = np.array([[0.0, 3.0, 7.0]])
    numeric, wday = features(raw, np.array(["2020-01-27"], dtype="datetime64[D]"))
    np.testing.assert_allclose(numeric[0], [np.log1p(0) - np.log1p(7), np.log1p(3) - np.log1p(7), np.log1p(7)])
    assert wday.tolist() == [0]  # a Monday


def test_learned_baselines_find_a_signal_the_majority_cannot():
    """Label = 'the last day is below the window's mean' (learnable from the relative features) on a weekly cycle."""
    rng = np.random.default_rng(2)
    raw = rng.poisson(50, (600, 10)).astype(float)
    y = (raw[:, -1] < raw.mean(1)).astype(np.int64)
    d = data_with(raw, y, np.arange(600).astype("datetime64[D]"))
    rows = {(r["baseline"], r["split"]): r for r in fit_baselines(d)}
    for split_name in ("random", "time"):
        majority = rows[("majority", split_name)]["test_acc"]
        assert rows[("logistic", split_name)]["test_acc"] > majority + 0.2
        assert rows[("boosted_trees", split_name)]["test_acc"] > majority + 0.2
    assert [r["split"] for r in fit_baselines(d)][:4] == ["random"] * 4  # configured split first
