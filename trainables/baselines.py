"""Strong simple baselines for the COVID classifier, on exactly the windows and splits the models get.

A recurrent model's accuracy means little alone: the label ("does tomorrow beat today") is partly predictable from
the weekly reporting cycle and from where today sits in the window. So every model is put beside:
- majority: always answers the class most common in the training part (a model that does this is a majority
  predictor, whatever its architecture);
- weekly rule: tomorrow repeats the same weekday a week before, i.e. predict "increase" when the value 7 days
  before the label day beats the last day (needs L >= 7; under the "cumulative-increase" label: when it was > 0);
- logistic regression and gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier) on the window in
  log1p space minus its last day, the last day's log1p and the label day's weekday.
Each is fitted on the training part only; validation and test accuracy are reported for the configured split and
the time split. Hyperparameters are fixed (scikit-learn's defaults, seeded), so nothing is chosen on test.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from data.sequence_data import SequenceData
from data.windows import weekday

BASELINES = ("majority", "weekly", "logistic", "boosted_trees")
WEEK = 7


def features(raw: np.ndarray, label_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, L-1 + 1) numeric features (log1p window minus its last day, last day's log1p) and the label weekday."""
    lg = np.sign(raw) * np.log1p(np.abs(raw))
    numeric = np.concatenate([lg[:, :-1] - lg[:, -1:], lg[:, -1:]], axis=1)
    return numeric, weekday(label_day)


def _predictions(name: str, data: SequenceData, split: Any, numeric: np.ndarray, wday: np.ndarray,
                 seed: int) -> np.ndarray | None:
    """Predicted class of every window (N,) from a baseline fitted on `split.train`; None when it does not apply."""
    y = np.asarray(data.y)
    if name == "majority":
        return np.full(len(y), int(np.mean(y[split.train]) > 0.5), dtype=np.int64)
    if name == "weekly":
        if data.raw.shape[1] < WEEK:
            return None
        raw = np.asarray(data.raw)
        week_before = raw[:, -WEEK]  # the label day's weekday, one week earlier (index L-7 of the window)
        return (week_before > raw[:, -1] if data.label == "next-higher" else week_before > 0).astype(np.int64)
    if len(np.unique(y[split.train])) < 2:  # one class to learn from: a fitted model can only answer it
        return np.full(len(y), int(y[split.train][0]), dtype=np.int64)
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logistic":
        design = np.concatenate([numeric, np.eye(WEEK)[wday]], axis=1)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    else:  # the last column is the weekday: a category, not an ordered number
        design = np.concatenate([numeric, wday[:, None].astype(np.float64)], axis=1)
        model = HistGradientBoostingClassifier(random_state=seed, categorical_features=[design.shape[1] - 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on near-separable windows; accuracy is what we report
        model.fit(design[split.train], y[split.train])
    return model.predict(design).astype(np.int64)


def fit_baselines(data: SequenceData, names: tuple[str, ...] = BASELINES, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (baseline, split): train/val/test accuracy; the configured split first, then the time split."""
    numeric, wday = features(np.asarray(data.raw), data.label_day)
    y = np.asarray(data.y)
    rows = []
    for split_name in dict.fromkeys([data.split, "time"]):
        split = data.splits[split_name]
        for name in names:
            pred = _predictions(name, data, split, numeric, wday, seed)
            if pred is None:
                continue
            row: dict[str, Any] = {"baseline": name, "split": split_name}
            for part in ("train", "val", "test"):
                idx = getattr(split, part)
                row[f"{part}_acc"] = float(np.mean(pred[idx] == y[idx]))
                row[f"n_{part}"] = int(len(idx))
            row["test_pred_positive_rate"] = float(np.mean(pred[split.test]))
            rows.append(row)
    return rows
