"""Anime faces: images from a zip (read in place) or a folder -> a cached uint8 (N, 3, S, S) array; a seeded split.

Decoding 20,963 PNGs takes seconds, loading the cache milliseconds; every trial of a study calls
``load_faces``, so the cache is what makes trials cheap. Bad images are skipped and counted, not fatal,
because one broken file in a scraped set of 20k should not stop a study. The source is only read: the cache
lives in the cache folder (``data.location.resolve_cache_dir``), never beside the images.

Decompression bombs are bounded three ways, each before the memory is spent (see the limits below): an image
member's size as its header declares it, the bytes actually read from it (a header can lie), and the pixel count
its image header declares before any pixel is decoded.
"""
from __future__ import annotations

import hashlib
import io
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from data.errors import DataError
from data.image_cache import cache_paths, read_cache, write_cache
from data.location import resolve_cache_dir

SIZES = (16, 28, 32, 64)
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Pillow identifies by content, not by name: only these decoders may run, so a ".png" cannot reach an exotic one.
DECODERS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")

# Limits. The real set is 20,963 PNGs of 64x64 pixels, at most 11 KB each and 198 MB in all; a face crop is
# never a large picture. So:
# - MAX_MEMBER_BYTES (32 MiB): about 3,000 times the largest real image and more than an uncompressed 3000x3000
#   RGB bitmap, yet small enough that reading one member can never exhaust memory (a 1 MB zip member can
#   declare, or hold, 1 GiB). A member over it is SKIPPED and counted with its reason, like any other
#   unreadable image: one oversized file in a scraped set should not stop a study, and nothing of it is read
#   beyond the limit.
# - MAX_TOTAL_BYTES (4 GiB): the sum over the image members that would be read, about 20 times the real set.
#   Over it the whole source is refused in one line before anything is decoded: no face set is that large,
#   so it is a crafted archive (e.g. thousands of members each just under the member limit), not data.
# - MAX_PIXELS (4096 x 4096): checked from the image's own header before its pixels are decoded, because a
#   small PNG can decode to a huge bitmap (a 100 KB PNG of 100,000,000 pixels needs 400 MB as RGBA). At the
#   limit one decoded RGBA bitmap is 64 MiB; real faces have 4,096 pixels. Over it the image is skipped.
MAX_MEMBER_BYTES = 32 * 2**20
MAX_TOTAL_BYTES = 4 * 2**30
MAX_SIDE = 4096
MAX_PIXELS = MAX_SIDE * MAX_SIDE


class OversizedImage(ValueError):
    """One image over a limit: skipped and counted like an unreadable one."""


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
    _check_total((i.file_size for i in images), "zip's image members declare", path)
    digest = _hash(f"{i.filename}\t{i.file_size}\t{i.CRC:08x}" for i in images)
    return images, "zip-" + digest


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _check_total(sizes: Iterator[int], what: str, path: Path) -> None:
    """Members over the per-image limit are skipped unread, so only the others count towards the total."""
    total = sum(n for n in sizes if n <= MAX_MEMBER_BYTES)
    if total > MAX_TOTAL_BYTES:
        raise DataError(
            f"the {what} {_mib(total)} of images in all, above the {_mib(MAX_TOTAL_BYTES)} limit for a face set "
            f"(the anime-faces set is about 190 MiB); refusing it as a likely decompression bomb", path,
        )


def _check_declared(declared: int) -> None:
    """From the zip header (or the file's size) alone, before a byte of the member is decompressed."""
    if declared > MAX_MEMBER_BYTES:
        raise OversizedImage(
            f"declared size {_mib(declared)} is above the {_mib(MAX_MEMBER_BYTES)} limit per image; not read"
        )


def _bounded_read(fh, declared: int, chunk: int = 2**20) -> bytes:
    """At most MAX_MEMBER_BYTES + 1 bytes: a header that understates the size cannot make us read more.

    In 1 MiB reads because zipfile decompresses up to the requested length before it trims to the declared
    size: one read of the whole limit would inflate a lying member to 32 MiB in memory just to drop it.
    """
    parts: list[bytes] = []
    got = 0
    while got <= MAX_MEMBER_BYTES:
        part = fh.read(min(chunk, MAX_MEMBER_BYTES + 1 - got))
        if not part:
            return b"".join(parts)
        parts.append(part)
        got += len(part)
    raise OversizedImage(
        f"holds more than the {_mib(MAX_MEMBER_BYTES)} limit per image (its header said {declared} bytes); "
        f"not read further"
    )


class _Budget:
    """Bytes actually read so far, against MAX_TOTAL_BYTES: the headers' total is checked first, but can lie."""

    def __init__(self, source: Path):
        self.source, self.used = source, 0

    def take(self, data: bytes) -> bytes:
        self.used += len(data)
        if self.used > MAX_TOTAL_BYTES:
            raise DataError(
                f"images read so far exceed the {_mib(MAX_TOTAL_BYTES)} limit for a face set although the "
                f"headers declared less; refusing it as a likely decompression bomb", self.source,
            )
        return data


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
    stats = [(p.relative_to(folder).as_posix(), p.stat()) for p in files]
    _check_total((st.st_size for _name, st in stats), "folder's image files hold", folder)
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
    """Bytes -> (3, S, S) uint8. Raises on anything unreadable or too large; the caller counts it as skipped.

    The pixel count comes from the image header, read by ``Image.open`` before any pixel is decoded; Pillow's
    own bomb check only warns below 179 million pixels, so ours is what bounds memory (and is local: Pillow's
    global ``MAX_IMAGE_PIXELS`` is left alone).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(data), formats=DECODERS)
    with im:
        width, height = im.size
        if width * height > MAX_PIXELS:
            raise OversizedImage(
                f"image is {width}x{height} = {width * height:,} pixels, above the {MAX_SIDE}x{MAX_SIDE} limit; "
                f"not decoded"
            )
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
        except DataError:  # a limit on the whole source (total bytes read): not one bad image
            raise
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
    it is served from a full cache when one exists, else only those members are decoded. ``cache_root``
    None means ``<cache folder>/faces`` ($STUDY_CACHE_DIR, else the user cache): never beside the source.
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
    root = Path(cache_root) if cache_root is not None else resolve_cache_dir() / "faces"
    budget = _Budget(source)

    if source.is_dir():
        files, source_hash = _folder_members(source)
        names = [p.relative_to(source).as_posix() for p in files]

        def read_file(k: int) -> bytes:
            declared = files[k].stat().st_size
            _check_declared(declared)
            with files[k].open("rb") as fh:  # the file may have grown since it was listed: read bounded
                return budget.take(_bounded_read(fh, declared))

        return _load(source, source_hash, names, read_file, size, resample, root, progress, max_images)
    if not zipfile.is_zipfile(source):
        raise DataError("not a zip archive (and not a folder of images)", source)
    try:
        with zipfile.ZipFile(source) as zf:
            infos, source_hash = _zip_members(zf, source)
            names = [i.filename for i in infos]

            def read_member(k: int) -> bytes:
                _check_declared(infos[k].file_size)
                with zf.open(infos[k]) as fh:
                    return budget.take(_bounded_read(fh, infos[k].file_size))

            return _load(source, source_hash, names, read_member, size, resample, root, progress, max_images)
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
    try:
        write_cache(npy_path, meta_path, images, meta)
    except OSError as err:
        raise DataError(
            f"cannot write the image cache ({err.__class__.__name__}: {err}); point --cache-dir / "
            f"$STUDY_CACHE_DIR at a writable folder", npy_path.parent,
        ) from None
    stored = read_cache(npy_path, meta_path, size)
    final = stored.images if stored is not None else images
    return FaceSet(final, len(images), len(skipped), source, source_hash, npy_path)


def split_three(n: int, val_frac: float, test_frac: float = 0.1, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Sorted train/validation/test positions. The test part is `split_indices`' own (the same seed holds out the
    same images), and validation comes out of what was training, so test numbers stay comparable across both."""
    train, test = split_indices(n, test_frac, seed)
    if not 0.0 <= val_frac < 1.0 - test_frac:
        raise DataError(f"val_frac must be in [0, 1 - test_frac), got {val_frac!r}")
    perm = np.random.default_rng(seed).permutation(int(n))
    rest = perm[len(test):]  # the training positions in the permutation's order
    n_val = min(int(round(n * val_frac)), max(len(rest) - 1, 0))
    return np.sort(rest[n_val:]).astype(np.int64), np.sort(rest[:n_val]).astype(np.int64), test


def split_indices(n: int, test_frac: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train/test positions from a seeded permutation: the same seed gives the same split on any machine."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"split needs a non-negative number of images, got {n!r}")
    if not 0.0 <= test_frac < 1.0:
        raise DataError(f"test_frac must be in [0, 1), got {test_frac!r}")
    perm = np.random.default_rng(seed).permutation(int(n))
    n_test = min(int(round(n * test_frac)), max(int(n) - 1, 0))
    return np.sort(perm[n_test:]).astype(np.int64), np.sort(perm[:n_test]).astype(np.int64)
