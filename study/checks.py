"""Checks of `study run` flags that need no data and no Ray: each is one line and exit 2, before anything exists.

A mistake found after the study folder, the MLflow parent run or Ray exist leaves debris (a RUNNING parent
run blocks a re-run, a half-made folder confuses `study resume`); these checks run first for that reason.
"""
from __future__ import annotations

import os
import re
import socket
import stat
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
MAX_INPUT_BYTES = 1 << 20  # a study file, a --fixed file, study.json: the homework preset is 6 KiB
MAX_DEPTH = 32             # lists and tables inside each other: a study file needs 5


class FlagError(DataError):
    """A flag value that cannot work; one line naming the flag."""


class InputError(ValueError):
    """A file or text that is not a bounded input (kind of file, size, nesting); `str()` is the problem."""


def name_ok(name: object) -> bool:
    """The one rule of study and part names, wherever they come from (--name, `name =`, the file's name, a
    part's name, study.json): one path component, never outside --storage nor into a sub-folder."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None and name not in (".", "..")


def check_name(name: str, flag: str = "--name") -> str:
    if not name_ok(name):
        raise FlagError(f"{flag} {name!r}: {NAME_RULE}")
    return name


def read_input(path: str | os.PathLike) -> str:
    """The text of a file a user names: a regular file of at most MAX_INPUT_BYTES, UTF-8. Opened without
    blocking and checked on the open file, so a FIFO, a device or a folder is refused, never waited on or read
    without end. InputError naming the problem."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise InputError(f"cannot read it ({err.strerror or err})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError("not a regular file (a folder, a FIFO or a device): name a file")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(MAX_INPUT_BYTES + 1)
    except OSError as err:
        raise InputError(f"cannot read it ({err.strerror or err})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"larger than {MAX_INPUT_BYTES // 1024} KiB, the most a study input may be")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"cannot read it ({err})") from None


def parse_bounded(parse, text: str):
    """`parse(text)` (tomllib.loads, json.loads) with lists and tables nested at most MAX_DEPTH deep: deeper is
    an InputError, never a RecursionError. The parser's own errors pass through."""
    too_deep = InputError(f"nested deeper than {MAX_DEPTH} levels of lists and tables")
    try:
        value = parse(text)
    except RecursionError:
        raise too_deep from None
    if _too_deep(value, 0):
        raise too_deep
    return value


def _too_deep(value: object, level: int) -> bool:
    if level > MAX_DEPTH:
        return True
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_too_deep(v, level + 1) for v in children)


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
