"""Sliding windows over daily new cases: labels, model inputs (features, normalisations), three-way splits.

Everything is array slicing (``sliding_window_view``) so L=30 on the full 3-year series builds in milliseconds;
options are names, not flags, so a study's config records exactly what it trained on.

Splits are train / validation / test: a model is chosen on validation and its test number is reported once.
The time split orders the parts by label day (train < validation < test, no label day in two parts): two
cutoffs on the label-day range. "Training days" (the per-country z-score statistics) are the days before the
first cutoff, whatever split is chosen: that is the one boundary that is leakage-free for every window.
The random split draws parts of exactly the time split's sizes, so the two splits differ only in WHICH windows
they hold (and models of both can be trained side by side in one stacked step, see trainables/sequence.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from data.covid import DailyCases
from data.errors import DataError

LABELS = ("next-higher", "cumulative-increase")
NORMS = ("none", "log1p", "minmax", "zscore")
SPLITS = ("random", "time", "country")
# counts: the (normalised) daily counts; relative: log1p(window) minus its last day, plus the last day's log1p
# level (what a forecaster compares: is tomorrow above today); +weekday: a one-hot of each input day's weekday.
FEATURES = ("counts", "counts+weekday", "relative", "relative+weekday")
MIN_LABEL_DAYS = 3  # one label day at least in each of train, validation and test


@dataclass(frozen=True)
class Windows:
    raw: np.ndarray  # float64 (N, L) daily new cases of the input days
    y: np.ndarray  # int64 (N,)
    country: np.ndarray  # int64 (N,) index into `countries`
    end: np.ndarray  # datetime64[D] (N,) last input day; the label day is end + 1
    countries: list[str]
    cutoffs: tuple[np.datetime64, np.datetime64]  # first label day of the time split's validation and test parts
    x: np.ndarray  # float32 (N, L, 1) the normalised counts (the `counts` features)

    @property
    def label_day(self) -> np.ndarray:
        return self.end + np.timedelta64(1, "D")

    @property
    def cutoff(self) -> np.datetime64:
        """First label day outside the time split's training part."""
        return self.cutoffs[0]


class Split(NamedTuple):
    """Window indices of the three parts; disjoint, each non-empty."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def weekday(days: np.ndarray) -> np.ndarray:
    """0 = Monday ... 6 = Sunday (1970-01-01, day 0, was a Thursday)."""
    return (days.astype("datetime64[D]").astype(np.int64) + 3) % 7


def _pick(kind: str, name: str, allowed: tuple[str, ...], source: Path | None) -> None:
    if name not in allowed:
        raise DataError(f"unknown {kind} {name!r}; choose one of {', '.join(allowed)}", source)


def check_options(
    n_days: int, seq_len: int, label: str = "next-higher", norm: str = "log1p", split: str = "random",
    train_frac: float = 0.7, source: Path | None = None, val_frac: float = 0.15, features: str = "counts",
) -> None:
    """Fail before any work with one line per problem, so a bad study config dies at once, not mid-trial."""
    _pick("label rule", label, LABELS, source)
    _pick("normalisation", norm, NORMS, source)
    _pick("split", split, SPLITS, source)
    _pick("feature set", features, FEATURES, source)
    if not isinstance(seq_len, (int, np.integer)) or isinstance(seq_len, bool) or seq_len < 1:
        raise DataError(f"sequence length L={seq_len!r} must be an integer >= 1", source)
    if seq_len > n_days - MIN_LABEL_DAYS:
        raise DataError(
            f"sequence length L={seq_len} is longer than the series allows ({n_days} days of new cases; "
            f"train, validation and test parts need L <= {max(n_days - MIN_LABEL_DAYS, 0)})", source)
    for name, frac in (("train_frac", train_frac), ("val_frac", val_frac)):
        if not isinstance(frac, (int, float)) or not 0.0 < float(frac) < 1.0:
            raise DataError(f"{name} {frac!r} must be strictly between 0 and 1", source)
    if train_frac + val_frac >= 1.0:
        raise DataError(f"train_frac + val_frac = {train_frac + val_frac:g} leaves no test part (must be < 1)", source)


def time_cutoffs(dates: np.ndarray, seq_len: int, train_frac: float = 0.7,
                 val_frac: float = 0.15) -> tuple[np.datetime64, np.datetime64]:
    """First label day of validation and of test: at train_frac and train_frac + val_frac of the label days,
    kept inside the range so that every part has at least one label day."""
    n_labels = len(dates) - seq_len
    first = min(max(int(round(train_frac * n_labels)), 1), n_labels - 2)
    second = min(max(int(round((train_frac + val_frac) * n_labels)), first + 1), n_labels - 1)
    return np.datetime64(dates[seq_len + first], "D"), np.datetime64(dates[seq_len + second], "D")


def _zstats(values: np.ndarray, dates: np.ndarray, cutoff: np.datetime64) -> tuple[np.ndarray, np.ndarray]:
    train = values[:, dates < cutoff]
    mean = train.mean(axis=1)
    std = train.std(axis=1)
    return mean, np.where(std > 0, std, 1.0)  # a flat training history: centre only, do not divide by 0


def _normalise(x: np.ndarray, norm: str, mean: np.ndarray | None, std: np.ndarray | None) -> np.ndarray:
    """x is (N, L) float64; mean/std are per window (already gathered by country) for zscore."""
    if norm == "log1p":
        return np.sign(x) * np.log1p(np.abs(x))  # symmetric, so kept (negative) revisions stay finite
    if norm == "minmax":
        lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
        span = hi - lo
        return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)
    if norm == "zscore":
        return (x - mean[:, None]) / std[:, None]
    return x


def inputs(raw: np.ndarray, end: np.ndarray, features: str = "counts", norm: str = "log1p",
           mean: np.ndarray | None = None, std: np.ndarray | None = None) -> np.ndarray:
    """Model inputs (N, L, F) float32 of windows `raw` (N, L) ending on days `end`.

    counts: F=1, the counts under `norm` (mean/std per window for zscore). relative: F=2, log1p(window) minus
    log1p(last day), and log1p(last day) on every step (`norm` does not apply: it is log1p by definition).
    +weekday adds 7 one-hot channels, the weekday of each input day.
    """
    n, seq_len = raw.shape
    if features.startswith("relative"):
        lg = np.sign(raw) * np.log1p(np.abs(raw))
        last = lg[:, -1:]
        chans = [lg - last, np.broadcast_to(last, lg.shape)]
    else:
        chans = [_normalise(raw, norm, mean, std)]
    out = np.empty((n, seq_len, len(chans) + (7 if features.endswith("+weekday") else 0)), dtype=np.float32)
    for c, values in enumerate(chans):
        out[:, :, c] = values
    if features.endswith("+weekday"):
        days = end[:, None] - np.arange(seq_len - 1, -1, -1).astype("timedelta64[D]")
        out[:, :, len(chans):] = np.eye(7, dtype=np.float32)[weekday(days)]
    return out


def build_windows(
    daily: DailyCases, countries: list[str], seq_len: int, label: str = "next-higher", norm: str = "log1p",
    cutoff: np.datetime64 | None = None, train_frac: float = 0.7, val_frac: float = 0.15,
) -> Windows:
    """Every stride-1 window of every country in C, labelled from the day after it (on raw counts).

    `cutoff` overrides the z-score's training-days boundary (default: the time split's first cutoff).
    """
    src = daily.source
    check_options(len(daily.dates), seq_len, label, norm, "random", train_frac, src, val_frac)
    unknown = [c for c in countries if c not in daily.countries]
    if unknown:
        raise DataError(f"country {unknown[0]!r} is not in the series", src)
    cutoffs = time_cutoffs(daily.dates, seq_len, train_frac, val_frac)
    rows = np.array([daily.countries.index(c) for c in countries], dtype=np.int64)
    vals = daily.values[rows]  # (K, T)
    t = vals.shape[1]
    n_per = t - seq_len
    raw = np.ascontiguousarray(sliding_window_view(vals, seq_len, axis=1)[:, :n_per].reshape(-1, seq_len))
    nxt = vals[:, seq_len:]
    y = (nxt > vals[:, seq_len - 1: t - 1]) if label == "next-higher" else (nxt > 0)
    country = np.repeat(np.arange(len(countries), dtype=np.int64), n_per)
    end = np.tile(daily.dates[seq_len - 1: t - 1], len(countries))
    mean = std = None
    if norm == "zscore":
        m, s = _zstats(vals, daily.dates, cutoffs[0] if cutoff is None else cutoff)
        mean, std = m[country], s[country]
    return Windows(raw=raw, y=y.reshape(-1).astype(np.int64), country=country, end=end, countries=list(countries),
                   cutoffs=cutoffs, x=inputs(raw, end, "counts", norm, mean, std))


def zscore_stats(daily: DailyCases, countries: list[str], cutoff: np.datetime64) -> tuple[np.ndarray, np.ndarray]:
    """Per-country mean and std of the training days, for countries in `countries` order."""
    rows = [daily.countries.index(c) for c in countries]
    return _zstats(daily.values[rows], daily.dates, cutoff)


def split_windows(w: Windows, split: str, train_frac: float = 0.7, val_frac: float = 0.15, seed: int = 0,
                  source: Path | None = None) -> Split:
    """Train / validation / test window indices; deterministic from seed.

    time: label day before the first cutoff -> train, before the second -> validation, else test.
    random: the homework's shuffled windows (neighbouring windows overlap, so it leaks), in parts of exactly
      the time split's sizes.
    country: whole countries held out for validation and for test (transfer to unseen countries).
    """
    _pick("split", split, SPLITS, source)
    day = w.label_day
    is_val = (day >= w.cutoffs[0]) & (day < w.cutoffs[1])
    is_test = day >= w.cutoffs[1]
    time = Split(np.flatnonzero(~is_val & ~is_test), np.flatnonzero(is_val), np.flatnonzero(is_test))
    rng = np.random.default_rng(seed)
    if split == "time":
        parts = time
    elif split == "random":
        perm = rng.permutation(len(w.y))
        a, b = len(time.train), len(time.train) + len(time.val)
        parts = Split(np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:]))
    else:
        k = len(w.countries)
        if k < 3:
            raise DataError(f"a country split needs at least 3 countries in C (train, validation, test), got {k}",
                            source)
        order = rng.permutation(k)
        n_val = min(max(int(round(val_frac * k)), 1), k - 2)
        n_test = min(max(int(round((1 - train_frac - val_frac) * k)), 1), k - 1 - n_val)
        val_c, test_c = order[:n_val], order[n_val:n_val + n_test]
        in_val, in_test = np.isin(w.country, val_c), np.isin(w.country, test_c)
        parts = Split(np.flatnonzero(~in_val & ~in_test), np.flatnonzero(in_val), np.flatnonzero(in_test))
    for name, idx in zip(Split._fields, parts):
        if len(idx) == 0:
            raise DataError(f"the {split} split leaves an empty {name} part", source)
    return parts


def latest_inputs(
    daily: DailyCases, seq_len: int, norm: str = "log1p", cutoff: np.datetime64 | None = None,
    train_frac: float = 0.7, features: str = "counts", val_frac: float = 0.15,
) -> tuple[np.ndarray, list[str]]:
    """The last L days of every country that reported any case: the homework's unlabelled "next day" inputs.

    Countries with an all-zero series are left out because a model's answer for them would mean nothing.
    """
    check_options(len(daily.dates), seq_len, "next-higher", norm, "random", train_frac, daily.source, val_frac,
                  features)
    if cutoff is None:
        cutoff = time_cutoffs(daily.dates, seq_len, train_frac, val_frac)[0]
    has = np.flatnonzero(np.abs(daily.values).sum(axis=1) > 0)
    raw = daily.values[has, -seq_len:]
    mean = std = None
    if norm == "zscore":
        mean, std = _zstats(daily.values[has], daily.dates, cutoff)
    end = np.full(len(has), daily.dates[-1], dtype="datetime64[D]")
    return inputs(raw, end, features, norm, mean, std), [daily.countries[i] for i in has]

