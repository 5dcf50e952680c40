"""A tiny CSSE-shaped data folder the tests write themselves, with hand-known answers.

Five countries over 12 days (11 days of new cases):
- Algeria: new cases 1..11.
- Australia: two provinces, each 1..11 -> summed 2..22 (perfectly correlated with Algeria).
- Brazil: an irregular series.
- Chile: one downward revision (new cases -1 on 1/25/20), the only negative step.
- Diamond Princess: all zero (zero variance; a non-country with no iso2).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DATES = [f"1/{d}/20" for d in range(22, 32)] + ["2/1/20", "2/2/20"]
DAILY = {
    "Algeria": list(range(1, 12)),
    "Brazil": [5, 1, 4, 2, 6, 0, 3, 7, 1, 5, 2],
    "Chile": [1, 2, -1, 3, 2, 4, 1, 3, 5, 2, 4],
    "Diamond Princess": [0] * 11,
}
PROVINCES = {("New South Wales", "Australia"): list(range(1, 12)), ("Victoria", "Australia"): list(range(1, 12))}
COORDS = {"Algeria": (28.0, 1.6), "Brazil": (-14.2, -51.9), "Chile": (-35.7, -71.5), "Diamond Princess": (0.0, 0.0),
          "New South Wales": (-33.9, 151.2), "Victoria": (-37.8, 145.0)}
COUNTRIES = ["Algeria", "Australia", "Brazil", "Chile", "Diamond Princess"]
LOOKUP = """UID,iso2,iso3,code3,FIPS,Admin2,Province_State,Country_Region,Lat,Long_,Combined_Key,Population
12,DZ,DZA,12,,,,Algeria,28.0339,1.6596,Algeria,43851043
36,AU,AUS,36,,,,Australia,-25.0,133.0,Australia,25459700
3601,AU,AUS,36,,,New South Wales,Australia,-33.8688,151.2093,"New South Wales, Australia",8118000
76,BR,BRA,76,,,,Brazil,-14.235,-51.9253,Brazil,212559409
152,CL,CHL,152,,,,Chile,-35.6751,-71.543,Chile,19116209
9999,,,,,,,Diamond Princess,0,0,Diamond Princess,
516,NA,NAM,516,,,,Namibia,-22.9576,18.4904,Namibia,2540916
"""


def _row(province: str, country: str, daily: list[int]) -> str:
    lat, lon = COORDS[province or country]
    cum = np.concatenate([[0], np.cumsum(daily)]).astype(int)
    return ",".join([province, country, str(lat), str(lon), *map(str, cum)])


def csv_text(dates: list[str] | None = None) -> str:
    header = ",".join(["Province/State", "Country/Region", "Lat", "Long", *(dates or DATES)])
    rows = [_row("", "Algeria", DAILY["Algeria"])]
    rows += [_row(p, c, v) for (p, c), v in PROVINCES.items()]
    rows += [_row("", c, DAILY[c]) for c in ("Brazil", "Chile", "Diamond Princess")]
    return "\n".join([header, *rows]) + "\n"


WAVE_COUNTRIES = ("Algeria", "Brazil", "Chile", "Namibia")


def wave_csv(days: int = 90, seed: int = 0, countries: tuple[str, ...] = WAVE_COUNTRIES) -> str:
    """A CSSE-shaped file from 2020-01-22 over `days` days of new cases (90: up to 2020-04-21, inside the homework
    range) of countries that share a wave and a weekday pattern, each with its own scale and noise: under the
    default any-pair 0.7 selection every one is in set C, and both classes are in every part of every split.
    (DATES/DAILY above are hand-checkable but one-class: every window of set C is an increase.) The same
    numbers as tests/test_example_cnn.py's synthetic_csv; every country is in LOOKUP, so the map has codes."""
    import datetime as dt

    rng = np.random.default_rng(seed)
    dates = [dt.date(2020, 1, 22) + dt.timedelta(i) for i in range(days + 1)]
    header = ["Province/State", "Country/Region", "Lat", "Long", *(f"{d.month}/{d.day}/{d.year % 100}" for d in dates)]
    shared = 50 + 30 * np.sin(np.arange(days) / 9) + 20 * (np.arange(days) % 7 < 5)
    rows = [",".join(header)]
    for country in countries:
        daily = np.maximum(0, shared * rng.uniform(0.5, 2) + rng.normal(0, 8, days)).round().astype(int)
        rows.append(",".join(["", country, "0", "0", *map(str, np.concatenate([[0], np.cumsum(daily)]))]))
    return "\n".join(rows) + "\n"


def write_data_dir(root: Path, csv: str | None = None, lookup: bool = True) -> Path:
    """root/covid/{confirmed CSV, lookup table}; returns root (what --data-dir takes)."""
    covid = Path(root) / "covid"
    covid.mkdir(parents=True, exist_ok=True)
    (covid / "time_series_covid19_confirmed_global.csv").write_text(csv_text() if csv is None else csv)
    if lookup:
        (covid / "UID_ISO_FIPS_LookUp_Table.csv").write_text(LOOKUP)
    return Path(root)


def confirmed_path(root: Path) -> Path:
    return Path(root) / "covid" / "time_series_covid19_confirmed_global.csv"


def write_faces_zip(root: Path, n: int = 3) -> Path:
    """A few tiny generated PNGs so `study data check` can run end to end on the fixture folder."""
    import io
    import zipfile

    from PIL import Image

    path = Path(root) / "anime_faces" / "anime_faces.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(1, n + 1):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(buf, format="PNG")
            zf.writestr(f"data/{i}.png", buf.getvalue())
    return path


def with_cell(text: str, row: int, day: int, value: str) -> str:
    """The CSV text with one count replaced: data row `row` (0-based), date column `day` (0-based)."""
    lines = text.split("\n")
    cells = lines[row + 1].split(",")
    cells[4 + day] = value
    lines[row + 1] = ",".join(cells)
    return "\n".join(lines)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `folder` (folders too) with its size and mtime: equal snapshots = nothing written."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        st = p.lstat()
        out[p.relative_to(folder).as_posix() + ("/" if p.is_dir() else "")] = (st.st_size, st.st_mtime_ns)
    st = Path(folder).lstat()
    out["."] = (st.st_size, st.st_mtime_ns)
    return out
