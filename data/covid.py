"""The CSSE wide CSV -> validated per-country cumulative series -> daily new cases.

Every check here exists because the CSV is hand-maintained upstream and a bad header or cell would otherwise
turn silently into NaN or a shifted time axis, which a model would happily learn from.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data.errors import DataError, MissingData

META = ("Province/State", "Country/Region", "Lat", "Long")
HOMEWORK_RANGE = ("2020-01-22", "2020-05-22")  # the homework's due date bounds what it could have seen
REVISION_RULES = ("clip", "keep")
MAX_COUNT = 1e10  # more people than the world has (8e9): a cumulative count above it is corrupt, not data
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


def read_utf8(path: Path, what: str) -> str:
    """The whole file as text, or one line saying where the first byte that is not UTF-8 sits.

    Decoded here rather than by pandas: pandas fails anywhere in the file with a long UnicodeDecodeError
    traceback about a chunk offset, while a byte position and line number let a user find the bad cell.
    """
    if not path.is_file():
        raise MissingData(f"missing file (expected {what})", path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read the file ({err.__class__.__name__}: {err.strerror or err})", path) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"not UTF-8 text: byte 0x{raw[err.start]:02x} at line {line} (byte offset {err.start}) is not valid "
            f"UTF-8 ({what}; re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8)", path,
        ) from None


def _read_header(path: Path, text: str) -> list[str]:
    """Read the header ourselves: pandas renames duplicated columns ("1/22/20.1"), hiding duplicated dates."""
    try:
        header = next(csv.reader(io.StringIO(text)), None)
    except csv.Error as err:
        raise DataError(f"malformed CSV header ({err})", path) from None
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
    text = read_utf8(path, "the CSSE time_series_covid19_confirmed_global.csv")
    header = _read_header(path, text)
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataError(f"duplicated column {dup!r} (a duplicated date)", path)
    dates = _parse_dates(path, header)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"malformed CSV ({' '.join(str(err).split())})", path) from None
    if df.empty:
        raise DataError("no data rows (header only)", path)
    df.columns = header
    date_cols = [h for h in header if h not in META]
    names = df["Country/Region"].fillna("").str.strip()
    if (names == "").any():
        raise DataError(f"empty Country/Region in data row {int(np.argmax(names == '')) + 1}", path)
    counts = _counts(path, df[date_cols], names, date_cols)
    summed = pd.DataFrame(counts, columns=date_cols).groupby(names.to_numpy()).sum().sort_index()
    coords = pd.DataFrame(
        {k: pd.to_numeric(df[k], errors="coerce") if k in df else np.nan for k in ("Lat", "Long")}
    ).groupby(names.to_numpy()).mean().reindex(summed.index)
    full = CovidSeries(
        countries=[str(c) for c in summed.index],
        dates=dates,
        cumulative=summed.to_numpy(dtype=np.float64),
        lat=coords["Lat"].to_numpy(dtype=np.float64),
        long=coords["Long"].to_numpy(dtype=np.float64),
        source=path,
    )
    return select_range(full, date_range)


def _counts(path: Path, raw: pd.DataFrame, names: pd.Series, date_cols: list[str]) -> np.ndarray:
    """Every cell a finite, non-negative count no larger than MAX_COUNT, or one line naming country, row and day.

    ``inf``, ``1e400`` (which parses to inf) and ``1e300`` are numbers to a parser but not counts: left in,
    they turn differences and correlations into inf/NaN with nothing but numpy warnings, and the country
    silently drops out of set C.
    """
    values = raw.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)

    def where(mask: np.ndarray) -> tuple[str, str]:
        r, c = (int(a[0]) for a in np.nonzero(mask))
        cell = raw.iat[r, c]
        blank = not isinstance(cell, str) or not cell.strip()
        shown = "'' (a blank cell, or a row shorter than the header)" if blank else repr(cell)
        return shown, f"in data row {r + 1} ({names.iat[r]}), column {date_cols[c]}"

    if np.isnan(values).any():
        cell, at = where(np.isnan(values))
        raise DataError(f"non-numeric count {cell} {at}", path)
    if np.isinf(values).any():
        cell, at = where(np.isinf(values))
        raise DataError(f"count {cell} {at} is not finite", path)
    if (values > MAX_COUNT).any():
        cell, at = where(values > MAX_COUNT)
        raise DataError(
            f"count {cell} {at} is above {MAX_COUNT:.0e}, more than the world's population: not a case count", path
        )
    if (values < 0).any():
        cell, at = where(values < 0)
        raise DataError(f"negative cumulative count {cell} {at}", path)
    return values


def select_range(series: CovidSeries, date_range: str) -> CovidSeries:
    """The same series on a named date range (load once, look at several ranges without re-parsing)."""
    sl = _select_range(series.source, series.dates, date_range)
    if sl == slice(0, len(series.dates)):
        return series
    return dataclasses.replace(series, dates=series.dates[sl], cumulative=series.cumulative[:, sl])


def describe_range(date_range: str) -> str:
    """How a range was named, for humans: 'homework range', 'full range' or 'given range'."""
    return {"full": "full range", "homework": "homework range"}.get(date_range, "given range")


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
