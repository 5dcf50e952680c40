"""Checks of `study run` flags that need no data and no Ray: each is one line and exit 2, before anything exists.

A mistake found after the study folder, the MLflow parent run or Ray exist leaves debris (a RUNNING parent
run blocks a re-run, a half-made folder confuses `study resume`); these checks run first for that reason.
"""
from __future__ import annotations

import os
import re
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from data.errors import DataError

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
NAME_RULE = "use 1-128 letters, digits, '-', '_' or '.' (one folder name, not '.' or '..')"
SEED_MAX = 2**31 - 1
PROBE_TIMEOUT_S = 5.0


class FlagError(DataError):
    """A flag value that cannot work; one line naming the flag."""


def name_ok(name: object) -> bool:
    """The one rule of study and part names, wherever they come from (--name, `name =`, the file's name, a
    part's name, study.json): one path component, never outside --storage nor into a sub-folder."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None and name not in (".", "..")


def check_name(name: str, flag: str = "--name") -> str:
    if not name_ok(name):
        raise FlagError(f"{flag} {name!r}: {NAME_RULE}")
    return name


def check_seed(seed: int) -> int:
    if not 0 <= seed <= SEED_MAX:
        raise FlagError(f"--seed {seed}: must be in [0, {SEED_MAX}]")
    return seed


def check_storage(storage: str | os.PathLike) -> Path:
    """--storage must be a folder this user can create study folders in (or a path where one can be made)."""
    path = Path(storage).resolve()
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be made: {existing} is a file"
        raise FlagError(f"--storage {storage}: {what}, not a folder")
    problem = None
    if not os.access(existing, os.W_OK | os.X_OK):
        problem = "no permission to write"
    else:
        try:  # root passes os.access everywhere; a read-only file system or /proc does not take a folder
            tempfile.TemporaryDirectory(dir=existing, prefix=".study-probe-").cleanup()
        except OSError as err:
            problem = err.strerror or str(err)
    if problem:
        where = "" if existing == path else f" (in {existing})"
        raise FlagError(f"--storage {storage}: not writable{where}: {problem}")
    return path


def probe_mlflow(uri: str | None) -> None:
    """A tracking server that does not answer would stall the study for minutes in MLflow's retries."""
    if not uri:
        return
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme in ("http", "https"):
        base = f"{parsed.scheme}://{parsed.hostname}{f':{parsed.port}' if parsed.port else ''}{parsed.path}"
        try:
            with urllib.request.urlopen(base.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S):
                pass
        except urllib.error.HTTPError:
            pass  # it answered (an auth proxy, an older server without /health): MLflow itself will say more
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise FlagError(f"--mlflow-uri {_safe(uri)}: no MLflow server answers there "
                            f"({getattr(reason, 'strerror', None) or reason})") from None
    elif scheme == "sqlite":
        db = parsed.path[1:] if parsed.path.startswith("//") else parsed.path
        folder = Path(db).parent if db else None
        if folder is not None and not folder.is_dir():
            raise FlagError(f"--mlflow-uri {uri}: folder {folder} does not exist")
    elif scheme in ("postgresql", "mysql", "mssql") and parsed.hostname:
        try:
            socket.create_connection((parsed.hostname, parsed.port or _DB_PORTS[scheme]), PROBE_TIMEOUT_S).close()
        except OSError as err:
            raise FlagError(f"--mlflow-uri {_safe(uri)}: no database server answers there "
                            f"({err.strerror or err})") from None


_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def _safe(uri: str) -> str:
    """The URI without a password (error lines end up in logs)."""
    parsed = urlparse(uri)
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@")
    return uri


def check_local_gpus(gpus_per_trial: float) -> None:
    """A local study asking for GPUs this machine does not have would leave every trial pending forever."""
    if gpus_per_trial <= 0:
        return
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus_per_trial > found:
        raise FlagError(f"--gpus-per-trial {gpus_per_trial:g}: this machine has {found} GPUs that torch can use")


def short(run: dict) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in run.items())
    return f"({text[:200]})"
