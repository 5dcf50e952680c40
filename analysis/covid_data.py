"""What the report needs from the COVID CSV itself: the correlation matrix and, when a run did not log it, set C.

Uses the same data-layer calls as the trainable (same date range and revision rule as the runs' params), so the
heatmap shows the matrix set C was chosen from. The CSV is never downloaded here: a report must not hang offline.
"""
from __future__ import annotations

import numpy as np

from analysis.results import RunInfo, StudyResults


def correlation(results: StudyResults, run: RunInfo | None = None) -> tuple[np.ndarray, list[str], dict]:
    """(corr (C,C), country names, info) of daily new cases with the run's date_range / revisions params."""
    from data.correlation import pearson_matrix
    from data.covid import daily_new_cases, load_confirmed
    from data.location import CONFIRMED_NAME, covid_file, resolve_data_dir

    if run is None:
        run = next(iter(results.select(trainable="covid")), None)
    date_range = (run.param("date_range") if run else None) or "full"
    revisions = (run.param("revisions") if run else None) or "clip"
    data_dir = resolve_data_dir(results.data_dir or (run.param("data_dir") if run else None))
    path = covid_file(data_dir, CONFIRMED_NAME, download=False)
    daily = daily_new_cases(load_confirmed(path, date_range), revisions)
    corr, zero = pearson_matrix(daily.values)
    info = {
        "date_range": date_range,
        "first": str(daily.dates[0]),
        "last": str(daily.dates[-1]),
        "zero_variance": [daily.countries[i] for i in zero],
        "path": str(path),
    }
    return corr, list(daily.countries), info


def recompute_set_c(results: StudyResults, run: RunInfo) -> list[str]:
    """Set C exactly as the run's data config chose it (its selection, threshold, reference, min_partners)."""
    from data.correlation import select_countries

    corr, names, _ = correlation(results, run)
    selection = run.param("selection") or "any-pair"
    return select_countries(
        corr, names, selection, float(run.param("threshold") or 0.7),
        reference=run.param("reference") if selection == "reference" else None,
        min_partners=int(float(run.param("min_partners"))) if selection == "k-partners" else None,
    )
