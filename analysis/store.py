"""Reading a study's stores without ever writing them, and a study folder wherever it lies now.

Why this module: MLflow's SQLite store creates a file it is pointed at (and its folders) and writes its tables into
any file it opens (an empty or foreign one, an older one: migrations), and Optuna's RDBStorage creates a missing
file too, so a reader that hands them a path can write where it meant to read. Here every reader (`study show`,
`report`, `export`, `open_study`) goes through:

- `folder_state(folder)`: what the folder's study.json says, resolved against where the folder lies now (the
  embedded store is the folder's own mlflow.db wherever the folder was copied, moved or renamed to:
  `trainables.names.folder_store`), with its Optuna storage checked;
- `mlflow_snapshot(path)`: an SQLite store, checked, copied into memory for `analysis.mlflow_sqlite` to read
  without MLflow;
- `mlflow_reader(uri)`: a URI MLflow may open. An SQLite store is checked (there, an SQLite file, MLflow's tables,
  not corrupted) on a read-only connection and copied with SQLite's backup API (one consistent snapshot, also of a
  study that is running) into a temporary folder that is removed when the block ends; MLflow opens that copy. A
  tracking server (or a database server) must answer within seconds (MLflow's own retries take minutes);
- `optuna_storage(path)`: Optuna's storage on a read-only SQLite connection (`mode=ro`: a write would fail);
- `reading(where)`: the failures of the libraries below (named types) as one `DataError` line.
"""
from __future__ import annotations

import json
import socket
import sqlite3
import sys
import tempfile
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

from data.errors import DataError
from data.inputs import InputError, parse_bounded, read_input
from trainables.names import MLFLOW_DB, OPTUNA_DB, STUDY_STATE, embedded_uri, folder_store

PROBE_TIMEOUT_S = 5.0
SQLITE_HEADER = b"SQLite format 3\x00"
MLFLOW_TABLES = ("experiments", "runs", "tags", "params", "metrics")
OPTUNA_TABLES = ("studies", "trials", "version_info")
BUSY_TIMEOUT_S = 30                # a study that is writing its store holds the lock for milliseconds
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


@dataclass(frozen=True)
class FolderState:
    """A study folder as a reader sees it, where it lies now."""

    folder: Path
    name: str                # the study's name (the MLflow experiment's): study.json's, else the folder's
    uri: str                 # its MLflow store: the folder's own mlflow.db, or the user's own URI as given
    data_dir: str | None     # the data folder the study ran on (absolute: it is not in the folder)
    made_by_run: bool        # it has a study.json (`study run` made it): then it has its optuna.db too


def folder_state(folder: str | Path) -> FolderState:
    """Read `folder/study.json` (if there) and check the folder's Optuna storage; DataError naming what is wrong.

    A folder with study.json was made by `study run`, which creates optuna.db before study.json: a missing, empty,
    foreign or corrupted optuna.db is an error. A bare store (mlflow.db alone) has none to check."""
    folder = Path(folder).resolve()
    path = folder / STUDY_STATE
    if not path.exists():
        return FolderState(folder, folder.name, embedded_uri(folder), None, False)
    state = _read_state(path)
    _check_sqlite(folder / OPTUNA_DB, "Optuna storage", OPTUNA_TABLES)
    return FolderState(folder, state["name"], folder_store(state.get("mlflow_uri"), state.get("study_dir"), folder),
                       state.get("data_dir"), True)


def _read_state(path: Path) -> dict[str, Any]:
    """study.json, by the rule of every input (`data.inputs`: a regular file of at most 1 MiB, bounded nesting),
    a JSON object with a name."""
    try:
        state = parse_bounded(json.loads, read_input(path))
    except (InputError, json.JSONDecodeError) as err:
        raise DataError(f"not a readable study state ({err})", path) from None
    if not isinstance(state, dict) or not isinstance(state.get("name"), str) or not state["name"]:
        raise DataError("not a study's state (a JSON object with the study's name)", path)
    for key in ("mlflow_uri", "study_dir", "data_dir"):
        if not isinstance(state.get(key), (str, type(None))):
            raise DataError(f"not a study's state ({key}: {state[key]!r} is not a text or null)", path)
    return state


# ------------------------------------------------------------------------------------------------ SQLite files
def sqlite_file(uri: str) -> Path | None:
    """The file an `sqlite:///` URI names (None for any other URI); `sqlite://` alone is an in-memory store."""
    if not uri.startswith("sqlite:"):
        return None
    if not uri.startswith("sqlite:///") or len(uri) == len("sqlite:///"):
        raise failure("an in-memory SQLite store holds no study: name a file (sqlite:///PATH)", uri)
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


@contextmanager
def read_only_sqlite(path: Path, kind: str, tables: tuple[str, ...]) -> Iterator[sqlite3.Connection]:
    """A read-only connection to an SQLite file checked to be `kind`: there, SQLite, with `tables`, not corrupted."""
    if not path.exists():
        raise DataError(f"no {kind}: the file is missing", path)
    if not path.is_file():
        raise DataError(f"not a file: not an {kind}", path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as err:
        raise DataError(f"cannot read it ({err.strerror or err})", path) from None
    if not head:
        raise DataError(f"an empty file: not an {kind}", path)
    if head != SQLITE_HEADER:
        raise DataError(f"not an SQLite database: not an {kind}", path)
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as err:
        raise DataError(f"cannot open the {kind} ({err})", path) from None
    try:
        try:
            found = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in tables if t not in found]
            if missing:
                raise DataError(f"not an {kind}: an SQLite database without its table {missing[0]!r}", path)
            problem = con.execute("PRAGMA quick_check(1)").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise DataError(f"a corrupted {kind} ({err})", path) from None
        if problem != "ok":
            raise DataError(f"a corrupted {kind} ({problem})", path)
        yield con
    finally:
        con.close()


def _check_sqlite(path: Path, kind: str, tables: tuple[str, ...]) -> None:
    with read_only_sqlite(path, kind, tables):
        pass


@contextmanager
def mlflow_reader(uri: str) -> Iterator[str]:
    """A tracking URI that MLflow may open to read the store `uri` names, for the `with` block.

    An SQLite store: a snapshot in a temporary folder (removed when the block ends), so MLflow never creates,
    migrates or locks the store itself. A server (or a database server): `uri` itself, once it answers."""
    path = sqlite_file(uri)
    if path is None:
        probe(uri)
        yield uri
        return
    with read_only_sqlite(path, "MLflow store", MLFLOW_TABLES) as con, \
            tempfile.TemporaryDirectory(prefix="study-read-") as tmp:
        snapshot = Path(tmp) / MLFLOW_DB
        try:
            copy = sqlite3.connect(snapshot)
            try:
                con.backup(copy)
            finally:
                copy.close()
        except sqlite3.Error as err:
            raise DataError(f"a corrupted or unreadable MLflow store ({err})", path) from None
        yield f"sqlite:///{snapshot}"


def mlflow_snapshot(path: Path) -> sqlite3.Connection:
    """An MLflow SQLite store, checked (there, an SQLite file, MLflow's tables, not corrupted) and copied into memory
    with SQLite's backup API (one consistent snapshot, also of a study that is running): what
    `analysis.mlflow_sqlite` reads, without MLflow."""
    from analysis import mlflow_sqlite

    with read_only_sqlite(path, "MLflow store", MLFLOW_TABLES) as con:
        try:
            return mlflow_sqlite.snapshot(con)
        except sqlite3.Error as err:
            raise DataError(f"a corrupted or unreadable MLflow store ({err})", path) from None


def optuna_storage(path: str | Path):
    """Optuna's storage of an SQLite file, read-only (SQLite's `mode=ro`): checked first, never created or written."""
    import optuna
    from optuna.exceptions import OptunaError
    from sqlalchemy.exc import SQLAlchemyError

    path = Path(path).resolve()
    _check_sqlite(path, "Optuna storage", OPTUNA_TABLES)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.storages.RDBStorage(f"sqlite:///file:{quote(str(path))}?mode=ro&uri=true",
                                          skip_table_creation=True)
    except (OptunaError, SQLAlchemyError) as err:
        raise DataError(f"not a readable Optuna storage ({_line(err)})", path) from None
    except RuntimeError as err:  # Optuna: a schema from another Optuna version ("optuna storage upgrade")
        raise DataError(f"an Optuna storage this Optuna cannot read ({_line(err)})", path) from None


# ------------------------------------------------------------------------------------------------ servers
def probe(uri: str) -> None:
    """A tracking server (or a database server) must answer within PROBE_TIMEOUT_S: MLflow's client retries for
    minutes otherwise. One DataError line naming the URI without its credentials."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if scheme in ("http", "https"):
        base = urlunsplit((parts.scheme, f"{parts.hostname}{f':{parts.port}' if parts.port else ''}", parts.path,
                           "", "")).rstrip("/")
        try:
            with urllib.request.urlopen(base + "/health", timeout=PROBE_TIMEOUT_S):
                pass
        except urllib.error.HTTPError:
            pass  # it answered (an auth proxy, a server without /health): MLflow itself will say more
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise failure(f"no MLflow server answers there ({getattr(reason, 'strerror', None) or reason})",
                          uri) from None
    elif scheme in _DB_PORTS and parts.hostname:
        try:
            socket.create_connection((parts.hostname, parts.port or _DB_PORTS[scheme]), PROBE_TIMEOUT_S).close()
        except OSError as err:
            raise failure(f"no database server answers there ({err.strerror or err})", uri) from None


def shown(uri: str) -> str:
    """A URI as it may be printed: without user, password, query or fragment (an MLflow URI can carry a token)."""
    parts = urlsplit(uri)
    if not (parts.username or parts.password or parts.query or parts.fragment):
        return uri
    netloc = f"{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# ------------------------------------------------------------------------------------------------ failures
def failure(problem: str, where: str | Path | None) -> DataError:
    """A DataError naming a file, or a URI (as `shown`: a URI is no path, DataError would fold its '//')."""
    if isinstance(where, str) and "://" in where:
        return DataError(f"{shown(where)}: {problem}")
    return DataError(problem, where)


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


@contextmanager
def reading(where: str | Path) -> Iterator[None]:
    """What the libraries raise while a store is read, as one DataError line naming `where` (what was read):
    MLflow's errors, SQLAlchemy's and sqlite3's (a store that broke while read), Optuna's, and OSError. Only the
    libraries already imported can have raised: none is imported here (a reader that needs neither MLflow nor
    Optuna, `study show` of a study folder, loads neither)."""
    try:
        yield
    except DataError:
        raise
    except Exception as err:
        if not isinstance(err, _library_errors()):
            raise
        raise failure(f"cannot read the study ({type(err).__name__}: {_line(err)})", where) from None


def _library_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [sqlite3.Error, OSError, UnicodeDecodeError, json.JSONDecodeError]
    for module, name in (("mlflow.exceptions", "MlflowException"), ("sqlalchemy.exc", "SQLAlchemyError"),
                         ("optuna.exceptions", "OptunaError")):
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)
