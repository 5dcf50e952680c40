"""The CSSE wide CSV -> validated per-country cumulative series -> daily new cases.

Every check here exists because the CSV is hand-maintained upstream and a bad header or cell would otherwise
turn silently into NaN or a shifted time axis, which a model would happily learn from.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data.errors import DataError

META = ("Province/State", "Country/Region", "Lat", "Long")
HOMEWORK_RANGE = ("2020-01-22", "2020-05-22")  # the homework's due date bounds what it could have seen
REVISION_RULES = ("clip", "keep")
_RANGE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class CovidSeries:
    countries: list[str]  # sorted Country/Region names, provinces summed
    dates: np.ndarray  # datetime64[D], (T,)
    cumulative: np.ndarray  # float64 (C, T)
    lat: np.ndarray  # (C,) mean of the provinces' coordinates
    long: np.ndarray
    source: Path


@dataclass(frozen=True)
class DailyCases:
    countries: list[str]
    dates: np.ndarray  # (T-1,) the day each new-case count belongs to
    values: np.ndarray  # float64 (C, T-1), after the revision rule
    revisions: int  # negative day-to-day steps found (before the rule was applied)
    revision_rule: str  # "clip" | "keep"
    source: Path | None = None


def _read_header(path: Path) -> list[str]:
    """Read the header ourselves: pandas renames duplicated columns ("1/22/20.1"), hiding duplicated dates."""
    if not path.is_file():
        raise DataError("missing file (expected the CSSE time_series_covid19_confirmed_global.csv)", path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError:
        raise DataError("not a text CSV file (cannot decode as UTF-8)", path) from None
    if not header or not any(h.strip() for h in header):
        raise DataError("empty file (no header row)", path)
    return [h.strip() for h in header]


def _parse_dates(path: Path, header: list[str]) -> np.ndarray:
    """Date columns must be M/D/YY, unique, strictly increasing and daily, or diffs would mean something else."""
    if "Country/Region" not in header:
        raise DataError("no 'Country/Region' column; not a CSSE time-series CSV", path)
    cols = [h for h in header if h not in META]
    if not cols:
        raise DataError("no date columns (expected M/D/YY headers such as 1/22/20 after Lat, Long)", path)
    parsed = pd.to_datetime(pd.Series(cols), format="%m/%d/%y", errors="coerce")
    bad = [c for c, d in zip(cols, parsed) if pd.isna(d)]
    if bad:
        raise DataError(f"column {bad[0]!r} is not a M/D/YY date ({len(bad)} such columns)", path)
    dates = parsed.to_numpy().astype("datetime64[D]")
    uniq, counts = np.unique(dates, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        names = [c for c, d in zip(cols, dates) if d == dup]
        raise DataError(f"duplicated date {dup} (columns {', '.join(names)})", path)
    steps = np.diff(dates).astype(int)
    if (steps < 0).any():
        i = int(np.argmax(steps < 0)) + 1
        raise DataError(f"date column {cols[i]!r} is out of order (comes after {cols[i - 1]!r})", path)
    if (steps != 1).any():
        i = int(np.argmax(steps != 1)) + 1
        raise DataError(f"dates jump from {cols[i - 1]!r} to {cols[i]!r}; the series must be daily", path)
    return dates


def _select_range(path: Path, dates: np.ndarray, date_range: str) -> slice:
    """Name ranges so a study config says what it used, not which column indices."""
    if date_range == "full":
        return slice(0, len(dates))
    if date_range == "homework":
        lo, hi = HOMEWORK_RANGE
    else:
        m = _RANGE_RE.match(date_range or "")
        if not m:
            raise DataError(
                f"bad date range {date_range!r}: use 'full', 'homework' or 'YYYY-MM-DD..YYYY-MM-DD'", path
            )
        lo, hi = m.groups()
    try:
        lo_d, hi_d = np.datetime64(lo, "D"), np.datetime64(hi, "D")
    except ValueError:
        raise DataError(f"bad date range {date_range!r}: not a calendar date", path) from None
    keep = np.flatnonzero((dates >= lo_d) & (dates <= hi_d))
    if len(keep) < 2:
        raise DataError(
            f"date range {date_range!r} keeps {len(keep)} day(s) of the file's {dates[0]}..{dates[-1]}; need at least 2",
            path,
        )
    return slice(int(keep[0]), int(keep[-1]) + 1)


def load_confirmed(path: str | Path, date_range: str = "full") -> CovidSeries:
    """Parse and validate the CSSE confirmed CSV; provinces are summed because the study works per country."""
    path = Path(path)
    header = _read_header(path)
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataError(f"duplicated column {dup!r} (a duplicated date)", path)
    dates = _parse_dates(path, header)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.ParserError as err:
        raise DataError(f"malformed CSV ({str(err).strip()})", path) from None
    if df.empty:
        raise DataError("no data rows (header only)", path)
    df.columns = header
    date_cols = [h for h in header if h not in META]
    raw = df[date_cols]
    counts = raw.apply(pd.to_numeric, errors="coerce")
    bad = counts.isna().to_numpy()
    if bad.any():
        r, c = (int(a[0]) for a in np.nonzero(bad))
        raise DataError(
            f"non-numeric count {raw.iat[r, c]!r} in data row {r + 1} ({df['Country/Region'].iat[r]}), column {date_cols[c]}",
            path,
        )
    if (counts.to_numpy() < 0).any():
        r, c = (int(a[0]) for a in np.nonzero(counts.to_numpy() < 0))
        raise DataError(f"negative cumulative count in data row {r + 1}, column {date_cols[c]}", path)
    names = df["Country/Region"].str.strip()
    if (names == "").any():
        raise DataError(f"empty Country/Region in data row {int(np.argmax(names == '')) + 1}", path)
    sl = _select_range(path, dates, date_range)
    summed = counts.iloc[:, sl].groupby(names.to_numpy()).sum().sort_index()
    coords = pd.DataFrame(
        {k: pd.to_numeric(df[k], errors="coerce") if k in df else np.nan for k in ("Lat", "Long")}
    ).groupby(names.to_numpy()).mean().reindex(summed.index)
    return CovidSeries(
        countries=[str(c) for c in summed.index],
        dates=dates[sl],
        cumulative=summed.to_numpy(dtype=np.float64),
        lat=coords["Lat"].to_numpy(dtype=np.float64),
        long=coords["Long"].to_numpy(dtype=np.float64),
        source=path,
    )


def daily_new_cases(series: CovidSeries, revisions: str = "clip") -> DailyCases:
    """Differences of the cumulative series. Downward revisions would be negative "new cases": clip (default)
    treats them as no new cases so labels and log1p stay meaningful; keep leaves them for analysis."""
    if revisions not in REVISION_RULES:
        raise DataError(f"unknown revision rule {revisions!r}; choose one of {', '.join(REVISION_RULES)}", series.source)
    diff = np.diff(series.cumulative, axis=1)
    found = int((diff < 0).sum())
    values = np.clip(diff, 0.0, None) if revisions == "clip" else diff
    return DailyCases(
        countries=list(series.countries),
        dates=series.dates[1:],
        values=values,
        revisions=found,
        revision_rule=revisions,
        source=series.source,
    )
