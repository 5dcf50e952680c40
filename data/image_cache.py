"""The on-disk cache of decoded face arrays: one .npy plus a .json sidecar per key, both written atomically.

Why a sidecar: the array alone cannot say how many members were skipped, nor which, and the skipped
positions are what let a partial request (``max_images``) be answered exactly from a full cache.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Bump when decoding changes (alpha handling, 16-bit scaling, size limits, ...) so old caches are never reused by mistake.
CACHE_FORMAT = 2


@dataclass(frozen=True)
class CacheEntry:
    images: np.ndarray   # uint8 (found, 3, S, S), memory-mapped read-only
    members: int         # image members considered (found + skipped)
    skipped: list[dict]  # {"index": position among the members, "member": name, "reason": text}
    npy_path: Path


def cache_paths(cache_root: Path, source_hash: str, size: int, resample: str, first: int | None) -> tuple[Path, Path]:
    """Every input that changes the pixels is in the name, so two settings can never share a file."""
    limit = "" if first is None else f"-first{first}"
    stem = f"faces-{source_hash}-{size}px-{resample}{limit}-v{CACHE_FORMAT}"
    return cache_root / f"{stem}.npy", cache_root / f"{stem}.json"


def read_cache(npy_path: Path, meta_path: Path, size: int) -> CacheEntry | None:
    """A missing, partial or inconsistent cache is a miss (rebuilt), never an error: it is only derived data."""
    if not (npy_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(npy_path, mmap_mode="r")
        found = int(meta["found"])
        members = int(meta["members"])
        skipped = list(meta["skipped"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (
        meta.get("format") != CACHE_FORMAT
        or images.dtype != np.uint8
        or images.shape != (found, 3, size, size)
        or found + len(skipped) != members
    ):
        return None
    return CacheEntry(images=images, members=members, skipped=skipped, npy_path=npy_path)


def _atomic_write(path: Path, write) -> None:
    """Temp file in the same folder + rename: readers (other Ray trials too) see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is meant to be shared like the data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_cache(npy_path: Path, meta_path: Path, images: np.ndarray, meta: dict) -> None:
    """Array first, sidecar last: a crash in between leaves an array without sidecar, which reads as a miss."""
    npy_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(npy_path, lambda fh: np.save(fh, images, allow_pickle=False))
    body = json.dumps({"format": CACHE_FORMAT, **meta}, indent=1).encode()
    _atomic_write(meta_path, lambda fh: fh.write(body))
