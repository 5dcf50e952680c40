"""Where the data lives: one setting (flag, else STUDY_DATA_DIR, else a per-user cache), and the files in it."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
import urllib.request
from pathlib import Path

from platformdirs import user_cache_dir

from data.errors import DataError

ENV_VAR = "STUDY_DATA_DIR"
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


def resolve_data_dir(flag: str | os.PathLike | None = None) -> Path:
    """The --data-dir flag wins, then $STUDY_DATA_DIR, then a per-user cache, so CI and users both need no code change."""
    if flag:
        return Path(flag).expanduser().resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return Path(user_cache_dir("study")).resolve()


def cache_dir(data_dir: Path) -> Path:
    """Derived arrays go beside the data when we may write there, else in the user cache (shared/data is read-only)."""
    preferred = Path(data_dir) / "cache"
    try:
        # As root a write probe succeeds even in a folder marked read-only (like shared/data): honour the mode bits.
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        if not Path(data_dir).stat().st_mode & stat.S_IWUSR:
            raise PermissionError(f"{data_dir} is marked read-only")
        preferred.mkdir(parents=True, exist_ok=True)
        probe = preferred / ".write-test"
        probe.touch()
        probe.unlink()
        return preferred
    except OSError:
        fallback = Path(user_cache_dir("study")) / "cache"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _download(url: str, dest: Path, timeout: float = 20.0) -> None:
    """Write to a temporary file first so an interrupted download never leaves half a CSV behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as resp, tempfile.NamedTemporaryFile(
        dir=dest.parent, delete=False, suffix=".part"
    ) as tmp:
        shutil.copyfileobj(resp, tmp)
    Path(tmp.name).replace(dest)


def covid_file(data_dir: Path, name: str = CONFIRMED_NAME, download: bool = True) -> Path:
    """Path of a CSSE file under data_dir/covid, downloaded from the CSSE repository when missing and possible."""
    path = Path(data_dir) / "covid" / name
    if path.is_file():
        return path
    where = path
    if download:
        # The data dir may be read-only; then fetch into the per-user cache instead.
        for target in (path, Path(user_cache_dir("study")) / "covid" / name):
            if target.is_file():
                return target
            try:
                _download(CSSE_URLS[name], target)
                return target
            except PermissionError:
                continue
            except OSError as err:
                raise DataError(
                    f"missing, and the download from {CSSE_URLS[name]} failed ({err.__class__.__name__}: {err}); "
                    f"fetch that file by hand into {path.parent} or point --data-dir / ${ENV_VAR} at a folder with covid/{name}",
                    where,
                ) from None
    raise DataError(
        f"missing; download {CSSE_URLS[name]} into {path.parent} or point --data-dir / ${ENV_VAR} at a folder with covid/{name}",
        where,
    )


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
    raise DataError(
        "missing; " + FACES_HELP.format(zip=zip_path, folder=folder / "images"),
        zip_path,
    )
