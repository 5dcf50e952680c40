"""`study report`: read a study from its MLflow store and write index.html + report.md with every figure."""
from __future__ import annotations

import argparse
from pathlib import Path

from study.cli import UsageError

from trainables.names import MLFLOW_DB as DB_FILE, STUDY_STATE as STUDY_FILE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a study's report (index.html + report.md + figures)")
    p.add_argument("--storage", help="folder of study folders, as given to `study run` (default ./studies)")
    p.add_argument("--mlflow-uri", help="tracking URI to read instead of STORAGE/NAME/mlflow.db")
    p.add_argument("--name", help="study name (default: the newest study in the store)")
    p.add_argument("--out", help="report folder (default STORAGE/NAME/report)")
    p.add_argument("--data-dir", help="data folder for the correlation figures (default: the study's, else $STUDY_DATA_DIR)")
    p.set_defaults(handler=_report)


def _is_study(folder: Path) -> bool:
    return (folder / STUDY_FILE).is_file() or (folder / DB_FILE).is_file()


def _newest_study(storage: Path) -> Path:
    found = [d for d in storage.iterdir() if d.is_dir() and _is_study(d)]
    if not found:
        raise UsageError(f"--storage {storage}: no study folders (with {STUDY_FILE} or {DB_FILE}) in it")
    return max(found, key=lambda d: max(f.stat().st_mtime for f in (d / STUDY_FILE, d / DB_FILE) if f.exists()))


def _study_dir(storage: Path, name: str | None) -> Path:
    if not storage.is_dir():
        raise UsageError(f"--storage {storage}: no such folder")
    if name is None:
        return _newest_study(storage)
    folder = storage / name
    if not _is_study(folder):
        names = sorted(d.name for d in storage.iterdir() if d.is_dir() and _is_study(d))
        raise UsageError(f"--name {name}: no study folder {folder}; studies here: {', '.join(names) or 'none'}")
    return folder


def _report(args: argparse.Namespace) -> int:
    from analysis.report import write_report
    from analysis.results import load_study
    from analysis.store import folder_state

    study_dir = state = None
    name = args.name
    if args.storage or not args.mlflow_uri:
        study_dir = _study_dir(Path(args.storage or "studies").resolve(), name)
        # The folder where it lies now: its study's name and store from its study.json (copied, moved or renamed)
        state = folder_state(study_dir)
        name = state.name
    uri = args.mlflow_uri or state.uri
    if args.out:
        out = Path(args.out)
    elif study_dir is not None:
        out = study_dir / "report"
    else:
        raise UsageError("--mlflow-uri without --storage needs --out (where to write the report)")
    # Artefacts are read in the folder; only a tracking server's are downloaded, into the report's .artifacts/
    results = load_study(uri, name, cache_dir=out / ".artifacts", folder=study_dir)
    results.data_dir = args.data_dir or (state.data_dir if state else None)
    if study_dir is not None:  # its Optuna storage (optuna.db) holds the search as Optuna saw it
        results.study_dir = str(study_dir)
    index = write_report(results, out)
    print(f"study: report for {results.name}: {index}")
    for fig, why in results.skipped.items():
        print(f"study: figure {fig} not drawn: {why}")
    return 0
