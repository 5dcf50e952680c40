"""Where the data lives and where derived files go: two settings, and the data folder is only ever read.

The data folder: --data-dir, else $STUDY_DATA_DIR, else the per-user cache folder. The cache folder (the image
cache, a downloaded CSSE CSV): --cache-dir, else $STUDY_CACHE_DIR, else ``platformdirs.user_cache_dir("study")``
(which honours $XDG_CACHE_HOME). Nothing is ever written into, or created as, a data folder: a shared or
read-only folder stays as it was, and a mistyped one is reported instead of being made.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from platformdirs import user_cache_dir

from data.errors import DataError, MissingData

ENV_VAR = "STUDY_DATA_DIR"
CACHE_ENV_VAR = "STUDY_CACHE_DIR"
CSSE_BASE = (
    "https://raw.githubusercontent.com/CSSEGISandData/COVID-19/master/csse_covid_19_data/"
)
CONFIRMED_NAME = "time_series_covid19_confirmed_global.csv"
LOOKUP_NAME = "UID_ISO_FIPS_LookUp_Table.csv"
CSSE_URLS = {
    CONFIRMED_NAME: CSSE_BASE + "csse_covid_19_time_series/" + CONFIRMED_NAME,
    LOOKUP_NAME: CSSE_BASE + LOOKUP_NAME,
}
FACES_ZIP = "anime_faces.zip"
FACES_HELP = (
    "download the Kaggle 'soumikrakshit/anime-faces' set (or the Anime-Face-Dataset, github.com/bchao1/Anime-Face-Dataset) "
    "and put its zip at {zip} or its images in {folder}"
)


def user_cache() -> Path:
    """The per-user cache folder (platformdirs: $XDG_CACHE_HOME/study, else ~/.cache/study on Linux)."""
    return Path(user_cache_dir("study")).resolve()


def resolve_data_dir(flag: str | os.PathLike | None = None) -> Path:
    """The --data-dir flag wins, then $STUDY_DATA_DIR, then the per-user cache, so CI and users need no code change.

    A folder named by flag or environment must exist: it is never created (a typo would otherwise leave an empty
    folder behind and every dataset would look "missing" instead of the setting looking wrong). The default may
    not exist yet: it only fills when a CSV is downloaded.
    """
    for value, how in ((flag, "--data-dir"), (os.environ.get(ENV_VAR), f"${ENV_VAR}")):
        if value:
            path = Path(value).expanduser().resolve()
            if not path.is_dir():
                what = "is not a folder" if path.exists() else "does not exist"
                raise DataError(
                    f"data folder {what} (given by {how}); check --data-dir / ${ENV_VAR}", path
                )
            return path
    return user_cache()


def resolve_cache_dir(flag: str | os.PathLike | None = None) -> Path:
    """The --cache-dir flag wins, then $STUDY_CACHE_DIR, then the per-user cache folder.

    Not created here: whoever writes into it creates it, so asking where the cache is never changes a disk.
    """
    for value in (flag, os.environ.get(CACHE_ENV_VAR)):
        if value:
            return Path(value).expanduser().resolve()
    return user_cache()


def _download(url: str, dest: Path, timeout: float = 20.0) -> None:
    """Connect before making any folder, and write to a temporary file first: a failed or interrupted download
    leaves neither an empty folder nor half a CSV behind."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
            try:
                shutil.copyfileobj(resp, tmp)
            except BaseException:
                Path(tmp.name).unlink(missing_ok=True)
                raise
    Path(tmp.name).replace(dest)


def covid_file(
    data_dir: Path, name: str = CONFIRMED_NAME, download: bool = True, cache_dir: str | os.PathLike | None = None
) -> Path:
    """A CSSE file: ``data_dir/covid/name``, else the cache's copy ``<cache>/covid/name``, else downloaded there.

    The download goes to the cache folder, never into the data folder (which may be shared or read-only, and
    is only ever read). ``cache_dir`` is the --cache-dir flag (None: $STUDY_CACHE_DIR, else the user cache).
    """
    path = Path(data_dir) / "covid" / name
    if path.is_file():
        return path
    cached = resolve_cache_dir(cache_dir) / "covid" / name
    if cached.is_file():
        return cached
    by_hand = f"put that file in {path.parent} or point --data-dir / ${ENV_VAR} at a folder with covid/{name}"
    if download:
        try:
            _download(CSSE_URLS[name], cached)
            return cached
        except OSError as err:
            raise MissingData(
                f"missing; downloading it from {CSSE_URLS[name]} failed ({err.__class__.__name__}: {err}); {by_hand}",
                path,
            ) from None
    raise MissingData(f"missing; download {CSSE_URLS[name]} and {by_hand}", path)


def faces_source(data_dir: Path) -> Path:
    """The anime-faces zip, else a folder of images; never downloaded (Kaggle needs a login)."""
    folder = Path(data_dir) / "anime_faces"
    zip_path = folder / FACES_ZIP
    if zip_path.is_file():
        return zip_path
    if folder.is_dir():
        for sub in (folder / "images", folder / "data", folder):
            if sub.is_dir() and any(p.is_file() and p.name != "manifest.csv" for p in sub.iterdir()):
                return sub
    raise MissingData(
        "missing; " + FACES_HELP.format(zip=zip_path, folder=folder / "images"),
        zip_path,
    )
