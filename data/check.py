"""`study data check` / `study data prepare`: what a study would see, as a dict (for tests) and as text.

The check runs the real pipeline (not a separate validator) so a green check means a study will load the same
files the same way.
"""
from __future__ import annotations

import time
from typing import Any

from data.correlation import EmptySelection, pearson_matrix, select_countries
from data.countries import iso2_codes
from data.covid import daily_new_cases, load_confirmed
from data.location import CONFIRMED_NAME, LOOKUP_NAME, covid_file, faces_source, resolve_data_dir
from data.sequence_data import file_hash
from data.windows import build_windows, check_options

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


def covid_summary(data_dir_flag: str | None, seq_len: int = 30) -> dict[str, Any]:
    """Counts and the three strategies' |C|, windows and label balance; bad input raises DataError."""
    data_dir = resolve_data_dir(data_dir_flag)
    csv_path = covid_file(data_dir, CONFIRMED_NAME)
    series = load_confirmed(csv_path)
    daily = daily_new_cases(series, "clip")
    check_options(len(daily.dates), seq_len, source=csv_path)
    corr, zero = pearson_matrix(daily.values)
    _iso, unmapped = iso2_codes(covid_file(data_dir, LOOKUP_NAME), series.countries)
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
        "data_hash": file_hash(csv_path),
        "countries": len(series.countries),
        "days": len(series.dates),
        "first_day": str(series.dates[0]),
        "last_day": str(series.dates[-1]),
        "revisions": daily.revisions,
        "zero_variance": [daily.countries[i] for i in zero],
        "unmapped": unmapped,
        "seq_len": seq_len,
        "strategies": strategies,
    }


def faces_summary(data_dir_flag: str | None, size: int = 64, resample: str = "bilinear") -> dict[str, Any]:
    """Loads (or builds, with a progress bar) the image cache; the counts come from the cache itself."""
    from data.faces import load_faces  # Pillow import only when images are wanted

    start = time.perf_counter()
    faces = load_faces(faces_source(resolve_data_dir(data_dir_flag)), size=size, resample=resample, progress=True)
    return {
        "source": str(faces.source), "found": faces.found, "skipped": faces.skipped, "size": size,
        "shape": list(faces.images.shape), "cache_path": str(faces.cache_path),
        "seconds": time.perf_counter() - start,
    }


def _names(items: list[str]) -> str:
    return f"{len(items)} ({', '.join(items)})" if items else "none"


def format_check(covid: dict[str, Any], faces: dict[str, Any] | None) -> str:
    lines = [
        f"data dir:               {covid['data_dir']}",
        f"covid file:             {covid['covid_file']} (sha256 {covid['data_hash']})",
        f"countries:              {covid['countries']}",
        f"days:                   {covid['days']}",
        f"date range:             {covid['first_day']}..{covid['last_day']}",
        f"revisions clipped:      {covid['revisions']} negative day-to-day steps in daily new cases (rule: clip)",
        f"zero-variance countries: {_names(covid['zero_variance'])}",
        f"unmapped countries:     {_names(covid['unmapped'])}",
        f"set C at L={covid['seq_len']} (label next-higher):",
    ]
    for row in covid["strategies"]:
        if row.get("note"):
            lines.append(f"  {row['name']:<36} |C|=0  ({row['note']})")
        else:
            lines.append(
                f"  {row['name']:<36} |C|={row['size']:<4} windows={row['windows']:<7} "
                f"positive={row['positive']:.1%}"
            )
    if faces is not None:
        lines += [
            f"images:                 found {faces['found']}, skipped {faces['skipped']} (from {faces['source']})",
            f"image cache:            {faces['cache_path']} (uint8 {tuple(faces['shape'])})",
        ]
    return "\n".join(lines)


def run_check(data_dir_flag: str | None, seq_len: int = 30, size: int = 64) -> str:
    start = time.perf_counter()
    text = format_check(covid_summary(data_dir_flag, seq_len), faces_summary(data_dir_flag, size))
    return text + f"\nchecked in:             {time.perf_counter() - start:.1f} s"


def run_prepare(data_dir_flag: str | None, size: int = 64, resample: str = "bilinear") -> str:
    faces = faces_summary(data_dir_flag, size, resample)
    return "\n".join([
        f"images:      found {faces['found']}, skipped {faces['skipped']} (from {faces['source']})",
        f"image cache: {faces['cache_path']} (uint8 {tuple(faces['shape'])}, resample {resample})",
        f"time:        {faces['seconds']:.1f} s",
    ])
