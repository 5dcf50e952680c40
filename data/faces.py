"""Anime faces: images from a zip (read in place) or a folder -> a cached uint8 (N, 3, S, S) array; a seeded split.

Decoding 20,963 PNGs takes seconds, loading the cache milliseconds; every trial of a study calls
``load_faces``, so the cache is what makes trials cheap. Bad images are skipped and counted, not fatal,
because one broken file in a scraped set of 20k should not stop a study.
"""
from __future__ import annotations

import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from data.errors import DataError
from data.image_cache import cache_paths, read_cache, write_cache
from data.location import cache_dir

SIZES = (16, 28, 32, 64)
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class FaceSet:
    images: np.ndarray  # uint8 (N, 3, S, S); read-only (memory-mapped cache)
    found: int
    skipped: int
    source: Path
    source_hash: str
    cache_path: Path


def natural_key(name: str) -> tuple:
    """2.png before 10.png: the files are numbered, and plain string order would scramble them."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts) + ((1, 0, name),)


def _is_image_name(name: str) -> bool:
    """By suffix; macOS resource forks (__MACOSX/, ._x.png) look like images but are not."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.lower().endswith(IMAGE_SUFFIXES) and not base.startswith(".") and not name.startswith("__MACOSX/")


def _escapes(name: str) -> bool:
    """We never extract, but a name like ../x.png marks a crafted or broken archive: refuse it outright."""
    norm = name.replace("\\", "/")
    return norm.startswith("/") or bool(re.match(r"^[A-Za-z]:", norm)) or ".." in norm.split("/")


def _hash(lines: Iterator[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()[:16]


def _zip_members(zf: zipfile.ZipFile, path: Path) -> tuple[list[zipfile.ZipInfo], str]:
    """Content hash from the central directory (name, size, CRC32 of every member).

    The CRC32 covers each member's uncompressed bytes, so any change to an image changes the hash,
    yet only the ~1 MB directory is read instead of the 200 MB archive: a cache hit stays well under a second.
    """
    infos = zf.infolist()
    for info in infos:
        if _escapes(info.filename):
            raise DataError(
                f"zip member {info.filename!r} escapes the archive (absolute path or '..'); refusing this zip", path
            )
    images = [i for i in infos if not i.is_dir() and _is_image_name(i.filename)]
    images.sort(key=lambda i: natural_key(i.filename))
    if not images:
        raise DataError(f"zip holds no images (no member ending in {', '.join(IMAGE_SUFFIXES)})", path)
    digest = _hash(f"{i.filename}\t{i.file_size}\t{i.CRC:08x}" for i in images)
    return images, "zip-" + digest


def _folder_members(folder: Path) -> tuple[list[Path], str]:
    """Content hash from relative names, sizes and modification times (ns) of the image files.

    Reading every byte would cost as much as decoding; an edit that keeps the size still changes the mtime.
    A copy without preserved mtimes only costs one rebuild (a false miss), never a stale hit.
    """
    files = [
        p for p in folder.rglob("*")
        if p.is_file() and _is_image_name(p.name)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    if not files:
        raise DataError(f"image folder is empty (no files ending in {', '.join(IMAGE_SUFFIXES)})", folder)
    files.sort(key=lambda p: natural_key(p.relative_to(folder).as_posix()))
    stats = ((p.relative_to(folder).as_posix(), p.stat()) for p in files)
    return files, "dir-" + _hash(f"{name}\t{st.st_size}\t{st.st_mtime_ns}" for name, st in stats)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Transparent pixels go on white (their hidden colour is often junk); 16-bit/float grey is scaled, not clipped."""
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        top = 1.0 if im.mode == "F" and a.max() <= 1.0 else (65535.0 if a.max() > 255 else 255.0)
        return Image.fromarray(np.clip(np.rint(a / top * 255.0), 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def _decode(data: bytes, size: int, resample: Image.Resampling) -> np.ndarray:
    """Bytes -> (3, S, S) uint8. Raises on anything unreadable; the caller counts it as skipped."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # truncated files fail here, not later
        rgb = _to_rgb(im)
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), resample)
        return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _decode_all(names: list[str], read: Callable[[int], bytes], size: int, resample: str, progress: bool, label: str):
    """Decode in member order, skipping (and recording) whatever fails, so one bad file never stops the build."""
    out = np.empty((len(names), 3, size, size), dtype=np.uint8)
    skipped: list[dict] = []
    found = 0
    for k in tqdm(range(len(names)), desc=f"decoding {label}", unit="img", disable=not progress):
        try:
            out[found] = _decode(read(k), size, RESAMPLE[resample])
            found += 1
        except Exception as err:  # noqa: BLE001 - any decoder failure means "skip this image"
            reason = " ".join(f"{err.__class__.__name__}: {err}".split())
            skipped.append({"index": k, "member": names[k], "reason": reason})
    return out[:found], skipped


def _from_full(full, first: int) -> tuple[np.ndarray, int]:
    """The first `first` members from a full cache: drop the images of members skipped before that point."""
    skipped = sum(1 for s in full.skipped if s["index"] < first)
    return full.images[: first - skipped], skipped


def load_faces(
    source: str | Path,
    size: int = 64,
    resample: str = "bilinear",
    cache_root: str | Path | None = None,
    progress: bool = True,
    max_images: int | None = None,
) -> FaceSet:
    """The faces as uint8 (N, 3, S, S), decoded once per (source content, S, filter) and memory-mapped after.

    ``max_images`` takes the first that many image members in natural order (found + skipped <= max_images);
    it is served from a full cache when one exists, else only those members are decoded.
    """
    source = Path(source)
    if size not in SIZES:
        raise DataError(f"bad image size {size!r}; choose one of {', '.join(map(str, SIZES))}", source)
    if resample not in RESAMPLE:
        raise DataError(f"unknown resample filter {resample!r}; choose one of {', '.join(RESAMPLE)}", source)
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise DataError(f"max_images must be a positive integer, got {max_images!r}", source)
    if not source.exists():
        raise DataError("missing: no such zip or image folder", source)
    root = Path(cache_root) if cache_root is not None else cache_dir(source.parent)

    if source.is_dir():
        files, source_hash = _folder_members(source)
        names = [p.relative_to(source).as_posix() for p in files]
        read = lambda k: files[k].read_bytes()  # noqa: E731
        return _load(source, source_hash, names, read, size, resample, root, progress, max_images)
    if not zipfile.is_zipfile(source):
        raise DataError("not a zip archive (and not a folder of images)", source)
    try:
        with zipfile.ZipFile(source) as zf:
            infos, source_hash = _zip_members(zf, source)
            names = [i.filename for i in infos]
            read = lambda k: zf.read(infos[k])  # noqa: E731
            return _load(source, source_hash, names, read, size, resample, root, progress, max_images)
    except zipfile.BadZipFile as err:
        raise DataError(f"broken zip archive ({err})", source) from None


def _load(source, source_hash, names, read, size, resample, root, progress, max_images) -> FaceSet:
    """Full cache first, then the exact partial cache, else decode and write the cache for this request."""
    first = None if max_images is None or max_images >= len(names) else max_images
    full = read_cache(*cache_paths(root, source_hash, size, resample, None), size)
    if full is not None and first is None:
        return FaceSet(full.images, len(full.images), len(full.skipped), source, source_hash, full.npy_path)
    if full is not None:
        images, skipped = _from_full(full, first)
        return FaceSet(images, len(images), skipped, source, source_hash, full.npy_path)
    npy_path, meta_path = cache_paths(root, source_hash, size, resample, first)
    hit = read_cache(npy_path, meta_path, size)
    if hit is not None:
        return FaceSet(hit.images, len(hit.images), len(hit.skipped), source, source_hash, npy_path)

    todo = names if first is None else names[:first]
    images, skipped = _decode_all(todo, read, size, resample, progress, source.name)
    if len(images) == 0:
        first_bad = f"{skipped[0]['member']}: {skipped[0]['reason']}"
        raise DataError(f"none of the {len(todo)} images could be read (first: {first_bad})", source)
    meta = {
        "source": str(source), "source_hash": source_hash, "size": size, "resample": resample,
        "members": len(todo), "found": len(images), "skipped": skipped,
    }
    write_cache(npy_path, meta_path, images, meta)
    stored = read_cache(npy_path, meta_path, size)
    final = stored.images if stored is not None else images
    return FaceSet(final, len(images), len(skipped), source, source_hash, npy_path)


def split_indices(n: int, test_frac: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train/test positions from a seeded permutation: the same seed gives the same split on any machine."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"split needs a non-negative number of images, got {n!r}")
    if not 0.0 <= test_frac < 1.0:
        raise DataError(f"test_frac must be in [0, 1), got {test_frac!r}")
    perm = np.random.default_rng(seed).permutation(int(n))
    n_test = min(int(round(n * test_frac)), max(int(n) - 1, 0))
    return np.sort(perm[n_test:]).astype(np.int64), np.sort(perm[:n_test]).astype(np.int64)
