"""One driver per study folder: an exclusive lock held while `study run` / `study resume` lives.

Two drivers on one folder would merge their trials into one Tune experiment and race on the MLflow store.
`fcntl.flock` on a file in the folder: the kernel drops the lock when the process ends, however it ends
(a kill -9 included), so a stale lock never blocks a resume. The lock file stays in the folder: deleting it
while another process may have it open would let two drivers each lock a different file.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from data.errors import DataError

LOCK_FILE = "study.lock"


class StudyLocked(DataError):
    """Another driver holds the study folder."""


def _new_dirs(folder: Path) -> list[Path]:
    """The folder and those of its parents that do not exist yet, outermost first."""
    missing = []
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        missing.append(p)
    return missing[::-1]


@contextmanager
def study_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the folder's lock (creating the folder if needed) for the `with` block.

    Refused (StudyLocked, nothing written) while another driver holds it. When the block raises and this call
    created the folder, the folder is removed again if nothing but the lock file is in it: a study that
    failed before it began leaves no half-made folder behind.
    """
    folder = Path(folder)
    created = _new_dirs(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise StudyLocked(f"another `study run` or `study resume` is using this study folder"
                              f"{f' (pid {holder})' if holder.isdigit() else ''}; wait for it to end", folder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield folder
        except BaseException:
            if created and {p.name for p in folder.iterdir()} <= {LOCK_FILE}:
                path.unlink(missing_ok=True)
                for d in reversed(created):
                    try:
                        d.rmdir()
                    except OSError:
                        break
            raise
    finally:
        os.close(fd)
