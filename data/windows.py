"""Sliding windows over daily new cases: labels, normalisations, splits and the unlabelled latest inputs.

Everything is array slicing (``sliding_window_view``) so L=30 on the full 3-year series builds in milliseconds;
options are names, not flags, so a study's config records exactly what it trained on.

"Training days" (used by the per-country z-score) are the days strictly before the time-split cutoff, whatever
split is chosen: that cutoff is the one boundary that is leakage-free for every window, so z-score statistics
never see a day a time-split test label depends on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from data.covid import DailyCases
from data.errors import DataError

LABELS = ("next-higher", "cumulative-increase")
NORMS = ("none", "log1p", "minmax", "zscore")
SPLITS = ("random", "time", "country")


@dataclass(frozen=True)
class Windows:
    x: np.ndarray  # float32 (N, L, 1), normalised
    y: np.ndarray  # int64 (N,)
    country: np.ndarray  # int64 (N,) index into `countries`
    end: np.ndarray  # datetime64[D] (N,) last input day; the label day is end + 1
    countries: list[str]
    cutoff: np.datetime64  # first label day of the time split's test side

    @property
    def label_day(self) -> np.ndarray:
        return self.end + np.timedelta64(1, "D")


def _pick(kind: str, name: str, allowed: tuple[str, ...], source: Path | None) -> None:
    if name not in allowed:
        raise DataError(f"unknown {kind} {name!r}; choose one of {', '.join(allowed)}", source)


def check_options(
    n_days: int, seq_len: int, label: str = "next-higher", norm: str = "log1p", split: str = "random",
    train_frac: float = 0.75, source: Path | None = None,
) -> None:
    """Fail before any work with one line per problem, so a bad study config dies at once, not mid-trial."""
    _pick("label rule", label, LABELS, source)
    _pick("normalisation", norm, NORMS, source)
    _pick("split", split, SPLITS, source)
    if not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
        raise DataError(f"sequence length L={seq_len!r} must be an integer >= 1", source)
    if seq_len > n_days - 2:
        raise DataError(
            f"sequence length L={seq_len} is longer than the series allows ({n_days} days of new cases; "
            f"a time split needs L <= {max(n_days - 2, 0)})", source)
    if not 0.0 < float(train_frac) < 1.0:
        raise DataError(f"train_frac {train_frac!r} must be strictly between 0 and 1", source)


def default_cutoff(dates: np.ndarray, seq_len: int, train_frac: float = 0.75) -> np.datetime64:
    """The label day at train_frac of the label-day range, kept inside it so both sides are non-empty."""
    n_labels = len(dates) - seq_len
    idx = seq_len + min(max(int(round(train_frac * n_labels)), 1), n_labels - 1)
    return dates[idx]


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


def build_windows(
    daily: DailyCases, countries: list[str], seq_len: int, label: str = "next-higher", norm: str = "log1p",
    cutoff: np.datetime64 | None = None, train_frac: float = 0.75,
) -> Windows:
    """Every stride-1 window of every country in C, labelled from the day after it (on raw counts)."""
    src = daily.source
    check_options(len(daily.dates), seq_len, label, norm, "random", train_frac, src)
    unknown = [c for c in countries if c not in daily.countries]
    if unknown:
        raise DataError(f"country {unknown[0]!r} is not in the series", src)
    if cutoff is None:
        cutoff = default_cutoff(daily.dates, seq_len, train_frac)
    rows = np.array([daily.countries.index(c) for c in countries], dtype=np.int64)
    vals = daily.values[rows]  # (K, T)
    t = vals.shape[1]
    n_per = t - seq_len
    x = sliding_window_view(vals, seq_len, axis=1)[:, :n_per].reshape(-1, seq_len)
    nxt = vals[:, seq_len:]
    y = (nxt > vals[:, seq_len - 1 : t - 1]) if label == "next-higher" else (nxt > 0)
    country = np.repeat(np.arange(len(countries), dtype=np.int64), n_per)
    mean = std = None
    if norm == "zscore":
        m, s = _zstats(vals, daily.dates, cutoff)
        mean, std = m[country], s[country]
    xn = _normalise(x, norm, mean, std).astype(np.float32)[:, :, None]
    return Windows(
        x=xn, y=y.reshape(-1).astype(np.int64), country=country,
        end=np.tile(daily.dates[seq_len - 1 : t - 1], len(countries)),
        countries=list(countries), cutoff=np.datetime64(cutoff, "D"),
    )


def split_indices(w: Windows, split: str, train_frac: float = 0.75, seed: int = 0,
                  source: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) into the windows; deterministic from seed.

    random: the homework's (shuffled windows, train_frac train; neighbouring windows overlap, so it leaks).
    time: label day before the cutoff -> train, on/after -> test; no label day on both sides.
    country: whole countries held out, so the test measures transfer to unseen countries.
    """
    _pick("split", split, SPLITS, source)
    rng = np.random.default_rng(seed)
    n = len(w.y)
    if split == "random":
        perm = rng.permutation(n)
        n_train = min(max(int(round(train_frac * n)), 1), n - 1)
        train, test = perm[:n_train], perm[n_train:]
    elif split == "time":
        before = w.label_day < w.cutoff
        train, test = np.flatnonzero(before), np.flatnonzero(~before)
    else:
        k = len(w.countries)
        if k < 2:
            raise DataError(f"a country split needs at least 2 countries in C, got {k}", source)
        held = rng.permutation(k)[: min(max(int(round((1 - train_frac) * k)), 1), k - 1)]
        is_test = np.isin(w.country, held)
        train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"the {split} split leaves an empty {'train' if len(train) == 0 else 'test'} side", source)
    return train, test


def latest_inputs(
    daily: DailyCases, seq_len: int, norm: str = "log1p", cutoff: np.datetime64 | None = None,
    train_frac: float = 0.75,
) -> tuple[np.ndarray, list[str]]:
    """The last L days of every country that reported any case: the homework's unlabelled "next day" inputs.

    Countries with an all-zero series are left out because a model's answer for them would mean nothing.
    """
    check_options(len(daily.dates), seq_len, "next-higher", norm, "random", train_frac, daily.source)
    if cutoff is None:
        cutoff = default_cutoff(daily.dates, seq_len, train_frac)
    has = np.flatnonzero(np.abs(daily.values).sum(axis=1) > 0)
    x = daily.values[has, -seq_len:]
    mean = std = None
    if norm == "zscore":
        mean, std = _zstats(daily.values[has], daily.dates, cutoff)
    xn = _normalise(x, norm, mean, std).astype(np.float32)[:, :, None]
    return xn, [daily.countries[i] for i in has]
