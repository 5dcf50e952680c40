"""`study data check` / `study data prepare`: what a study would see, as a dict (for tests) and as text.

The check runs the real pipeline (not a separate validator) so a green check means a study will load the same
files the same way. It only reads the data folder; the image cache goes to the cache folder.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from data.correlation import EmptySelection, pearson_matrix, select_countries
from data.countries import iso2_codes
from data.covid import daily_new_cases, describe_range, load_confirmed, select_range
from data.errors import DataError, MissingData
from data.location import (
    CACHE_ENV_VAR, CONFIRMED_NAME, ENV_VAR, LOOKUP_NAME, covid_file, faces_source, resolve_cache_dir, resolve_data_dir,
)
from data.sequence_data import file_hash
from data.windows import build_windows, check_options

DATASETS = ("covid", "faces")
# The range the project's presets train on, so the check's set C is the one a default study uses.
DEFAULT_RANGE = "homework"

# The three example settings, so the check shows how each behaves on the data at hand.
EXAMPLE_STRATEGIES: tuple[tuple[str, float, dict[str, Any]], ...] = (
    ("reference", 0.6, {"reference": "Algeria"}),
    ("any-pair", 0.7, {}),
    ("k-partners", 0.55, {"min_partners": 40}),
)


def _describe(strategy: str, threshold: float, kw: dict[str, Any]) -> str:
    if strategy == "reference":
        return f"reference {kw['reference']} > {threshold}"
    if strategy == "k-partners":
        return f"k-partners >= {kw['min_partners']} partners > {threshold}"
    return f"any-pair > {threshold}"


def covid_summary(
    data_dir_flag: str | None, seq_len: int = 30, date_range: str = DEFAULT_RANGE, cache_dir: str | None = None,
) -> dict[str, Any]:
    """Counts over the whole file, then revisions, |C|, windows and label balance on ``date_range``.

    The whole file is validated whatever the range (a bad cell outside it still means a bad file); set C and
    the windows are computed on the range a study would train on, which the text says.
    """
    data_dir = resolve_data_dir(data_dir_flag)
    csv_path = covid_file(data_dir, CONFIRMED_NAME, cache_dir=cache_dir)
    lookup_path = covid_file(data_dir, LOOKUP_NAME, cache_dir=cache_dir)
    full = load_confirmed(csv_path)
    series = select_range(full, date_range)
    daily = daily_new_cases(series, "clip")
    check_options(len(daily.dates), seq_len, source=csv_path)
    corr, zero = pearson_matrix(daily.values)
    _iso, unmapped = iso2_codes(lookup_path, series.countries)
    strategies = []
    for strategy, threshold, kw in EXAMPLE_STRATEGIES:
        row: dict[str, Any] = {"name": _describe(strategy, threshold, kw), "strategy": strategy, "threshold": threshold, **kw}
        try:
            chosen = select_countries(corr, daily.countries, strategy, threshold, source=csv_path, **kw)
        except EmptySelection as err:  # an empty C is a finding about this data, not a reason to stop the check
            row.update(size=0, windows=0, positive=None, note=err.problem)
        else:
            win = build_windows(daily, chosen, seq_len, "next-higher", "none")
            row.update(size=len(chosen), windows=int(len(win.y)), positive=float(win.y.mean()))
        strategies.append(row)
    return {
        "data_dir": str(data_dir),
        "covid_file": str(csv_path),
        "lookup_file": str(lookup_path),
        "data_hash": file_hash(csv_path),
        "countries": len(full.countries),
        "days": len(full.dates),
        "first_day": str(full.dates[0]),
        "last_day": str(full.dates[-1]),
        "date_range": date_range,
        "range_first": str(series.dates[0]),
        "range_last": str(series.dates[-1]),
        "range_days": len(series.dates),
        "revisions": daily.revisions,
        "zero_variance": [daily.countries[i] for i in zero],
        "unmapped": unmapped,
        "seq_len": seq_len,
        "strategies": strategies,
    }


def faces_summary(
    data_dir_flag: str | None, size: int = 64, resample: str = "bilinear", cache_dir: str | None = None,
) -> dict[str, Any]:
    """Loads (or builds, with a progress bar) the image cache; the counts come from the cache itself."""
    from data.faces import load_faces  # Pillow import only when images are wanted

    start = time.perf_counter()
    source = faces_source(resolve_data_dir(data_dir_flag))
    faces = load_faces(source, size=size, resample=resample, cache_root=resolve_cache_dir(cache_dir) / "faces",
                       progress=True)
    return {
        "source": str(faces.source), "found": faces.found, "skipped": faces.skipped, "size": size,
        "shape": list(faces.images.shape), "cache_path": str(faces.cache_path),
        "seconds": time.perf_counter() - start,
    }


def _names(items: list[str]) -> str:
    return f"{len(items)} ({'; '.join(items)})" if items else "none"  # '; ': names like 'Korea, North' hold commas


def format_covid(covid: dict[str, Any]) -> list[str]:
    span = f"{covid['range_first']}..{covid['range_last']}"
    lines = [
        f"covid file:             {covid['covid_file']} (sha256 {covid['data_hash']})",
        f"lookup table:           {covid['lookup_file']}",
        f"countries:              {covid['countries']}",
        f"days:                   {covid['days']} ({covid['first_day']}..{covid['last_day']}, all validated)",
        f"checked range:          {span} ({describe_range(covid['date_range'])}, {covid['range_days']} days; "
        f"--date-range {covid['date_range']})",
        f"revisions clipped:      {covid['revisions']} negative day-to-day steps in daily new cases on {span} "
        f"(rule: clip)",
        f"zero-variance countries: {_names(covid['zero_variance'])}",
        f"unmapped countries:     {_names(covid['unmapped'])}",
        f"set C at L={covid['seq_len']} on {span} ({describe_range(covid['date_range'])}), label next-higher:",
    ]
    for row in covid["strategies"]:
        if row.get("note"):
            lines.append(f"  {row['name']:<36} |C|=0  ({row['note']})")
        else:
            lines.append(
                f"  {row['name']:<36} |C|={row['size']:<4} windows={row['windows']:<7} "
                f"positive={row['positive']:.1%}"
            )
    return lines


def format_faces(faces: dict[str, Any]) -> list[str]:
    return [
        f"images:                 found {faces['found']}, skipped {faces['skipped']} (from {faces['source']})",
        f"image cache:            {faces['cache_path']} (uint8 {tuple(faces['shape'])})",
    ]


def _missing_line(label: str, err: MissingData) -> str:
    """One line: what is missing and what to do (the error's own advice, without its leading 'missing')."""
    advice = err.problem.removeprefix("missing").lstrip(",;: ")
    return f"{label + ':':<24}missing ({err.path}: {advice})"


@dataclass(frozen=True)
class CheckResult:
    """What `study data check` prints: the summary (stdout), one line per bad dataset (stderr), the exit code."""

    text: str
    errors: list[str] = field(default_factory=list)
    code: int = 0


def run_check(
    data_dir_flag: str | None, seq_len: int = 30, size: int = 64, datasets: tuple[str, ...] = DATASETS,
    date_range: str = DEFAULT_RANGE, cache_dir: str | None = None,
) -> CheckResult:
    """Check the named datasets; a DataError of a dataset named alone propagates (one line, exit 2).

    With both datasets asked for, a MISSING one is reported as one line and the other is still checked (the
    COVID data can be checked before the faces are downloaded); a present but malformed one is an error line,
    and the exit code is 2 when any dataset is malformed or when none is there at all.
    """
    start = time.perf_counter()
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown or not datasets:
        raise DataError(f"unknown dataset {', '.join(unknown) or '(none)'}; choose from {', '.join(DATASETS)}")
    data_dir = resolve_data_dir(data_dir_flag)  # a mistyped folder fails the whole check, whatever is asked
    lines = [f"data dir:               {data_dir}", f"cache dir:              {resolve_cache_dir(cache_dir)}"]
    errors: list[str] = []
    missing = 0
    for name in datasets:
        try:
            if name == "covid":
                lines += format_covid(covid_summary(data_dir_flag, seq_len, date_range, cache_dir))
            else:
                lines += format_faces(faces_summary(data_dir_flag, size, cache_dir=cache_dir))
        except MissingData as err:
            if len(datasets) == 1:
                raise
            missing += 1
            lines.append(_missing_line("covid" if name == "covid" else "images", err))
        except DataError as err:
            if len(datasets) == 1:
                raise
            errors.append(str(err))
    if missing == len(datasets):
        errors.append(
            f"{data_dir}: no dataset found (covid and images both missing); check --data-dir / ${ENV_VAR}"
        )
    lines.append(f"checked in:             {time.perf_counter() - start:.1f} s")
    return CheckResult("\n".join(lines), errors, 2 if errors else 0)


def run_prepare(data_dir_flag: str | None, size: int = 64, resample: str = "bilinear",
                cache_dir: str | None = None) -> str:
    faces = faces_summary(data_dir_flag, size, resample, cache_dir)
    hint = "" if cache_dir is None else f" (a study finds it with ${CACHE_ENV_VAR}={resolve_cache_dir(cache_dir)})"
    return "\n".join([
        f"images:      found {faces['found']}, skipped {faces['skipped']} (from {faces['source']})",
        f"image cache: {faces['cache_path']} (uint8 {tuple(faces['shape'])}, resample {resample}){hint}",
        f"time:        {faces['seconds']:.1f} s",
    ])
