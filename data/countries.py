"""CSSE country name -> lower-case ISO 3166 alpha-2 (pygal's world map keys), from CSSE's own lookup table.

The lookup table is used rather than a name-matching library because it is keyed by exactly the names the
time series uses ("Korea, South", "Taiwan*", "Burma"), so no fuzzy matching can go wrong.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from data.covid import read_utf8
from data.errors import DataError

_NEEDED = ("iso2", "Admin2", "Province_State", "Country_Region")


def iso2_codes(lookup_csv: str | Path, countries: list[str]) -> tuple[dict[str, str], list[str]]:
    """Map every name that has a country-level row with an iso2; the rest (cruise ships, Olympics) are returned
    as unmapped so the map can say what it left out."""
    path = Path(lookup_csv)
    text = read_utf8(path, "the CSSE UID_ISO_FIPS_LookUp_Table.csv")
    if not text.strip():
        raise DataError("empty file (expected the CSSE lookup table)", path)
    try:
        # keep_default_na=False: Namibia's code "NA" must stay a string, not become NaN.
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError("empty file (expected the CSSE lookup table)", path) from None
    except pd.errors.ParserError as err:
        raise DataError(f"malformed CSV ({' '.join(str(err).split())})", path) from None
    missing = [c for c in _NEEDED if c not in table.columns]
    if missing:
        raise DataError(f"not a CSSE lookup table: missing column(s) {', '.join(missing)}", path)
    if table.empty:
        raise DataError("no data rows (header only): not a CSSE lookup table", path)
    table = table[list(_NEEDED)].fillna("")  # a short row leaves NaN cells; treat them as empty
    level = table[(table["Province_State"].str.strip() == "") & (table["Admin2"].str.strip() == "")]
    level = level[level["iso2"].str.strip() != ""]
    lookup = dict(zip(level["Country_Region"].str.strip(), level["iso2"].str.strip().str.lower()))
    mapped = {c: lookup[c] for c in countries if c in lookup}
    unmapped = [c for c in countries if c not in lookup]
    return mapped, unmapped
