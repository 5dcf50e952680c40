"""Pearson correlation between every pair of countries, and the named strategies that pick set C from it."""
from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np

from data.errors import DataError

STRATEGIES = ("reference", "any-pair", "k-partners")


class EmptySelection(DataError):
    """Set C came out empty: a finding about the data (the check reports it) rather than a malformed input."""


def pearson_matrix(values: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """One matrix product instead of C*C Python calls (201 countries -> 40k pairs).

    Zero-variance rows (a country that never changed) have no defined correlation: their rows and columns are
    NaN and their indices are returned, so callers report them instead of meeting an unexplained NaN later.
    """
    v = np.asarray(values, dtype=np.float64)
    centred = v - v.mean(axis=1, keepdims=True)
    norms = np.sqrt((centred**2).sum(axis=1))
    zero = norms <= 1e-12 * np.maximum(1.0, np.abs(v).max(axis=1))
    safe = np.where(zero, 1.0, norms)
    unit = centred / safe[:, None]
    corr = np.clip(unit @ unit.T, -1.0, 1.0)
    corr[zero, :] = np.nan
    corr[:, zero] = np.nan
    return corr, [int(i) for i in np.flatnonzero(zero)]


def _check_threshold(name: str, value: float, source: Path | None) -> None:
    try:
        ok = -1.0 <= float(value) <= 1.0  # NaN fails this too
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"{name} {value!r} is outside [-1, 1] (a correlation threshold)", source)


def select_countries(
    corr: np.ndarray,
    countries: list[str],
    strategy: str,
    threshold: float,
    reference: str | None = None,
    min_partners: int | None = None,
    *,
    source: Path | None = None,
) -> list[str]:
    """Set C, by a named strategy so a study records how it was chosen (the homework leaves "high" open).

    Comparisons are strict (> threshold); NaN (zero-variance) pairs never count. ``source`` only names the
    file in error messages.
    """
    _check_threshold("threshold", threshold, source)
    corr = np.asarray(corr, dtype=np.float64)
    off = corr.copy()
    np.fill_diagonal(off, np.nan)
    with np.errstate(invalid="ignore"):
        above = np.nan_to_num(off, nan=-np.inf) > threshold
    if strategy == "reference":
        if reference not in countries:
            close = difflib.get_close_matches(str(reference), countries, n=3, cutoff=0.5)
            lower = {c.lower(): c for c in countries}
            if str(reference).lower() in lower:
                close = [lower[str(reference).lower()]] + [c for c in close if c != lower[str(reference).lower()]]
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; no similar name found"
            raise DataError(f"unknown reference country {reference!r}{hint}", source)
        ref = countries.index(reference)
        if np.isnan(corr[ref, ref]):
            raise DataError(f"reference country {reference!r} has zero variance in this date range", source)
        keep = above[ref].copy()
        keep[ref] = True
        what = f"with correlation to {reference} above threshold {threshold}"
    elif strategy == "any-pair":
        keep = above.any(axis=1)
        what = f"in a pair with correlation above threshold {threshold}"
    elif strategy == "k-partners":
        if min_partners is None or int(min_partners) < 1:
            raise DataError(f"k-partners needs min_partners >= 1, got {min_partners!r}", source)
        keep = above.sum(axis=1) >= int(min_partners)
        what = f"with >= {int(min_partners)} partners above threshold {threshold}"
    else:
        raise DataError(f"unknown selection strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}", source)
    chosen = [c for c, k in zip(countries, keep) if k]
    if strategy == "reference" and len(chosen) < 2 or not chosen:
        fix = "lower threshold" + (" or min_partners" if strategy == "k-partners" else "")
        raise EmptySelection(f"set C is empty: no country {what}; {fix} (now {threshold})", source)
    return chosen
