"""Anime faces: zip/folder decoding, bad images skipped and counted, bad inputs as one-line DataErrors, the cache."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import data.faces as faces
import data.image_cache as image_cache
from data.errors import DataError
from data.faces import load_faces, natural_key, split_indices


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _palette(value: int) -> Image.Image:
    im = Image.new("P", (64, 64), 0)
    im.putpalette([value, 7, 7] + [0, 0, 0] * 255)
    return im


def _members() -> dict[str, bytes]:
    """12 image-named members: 10 readable in various modes and sizes, one truncated, one not an image.

    Channel 0 of each readable image is a tag (20 * member number) so the tests can see the order.
    """
    good_png = _png(Image.new("RGB", (64, 64), (100, 1, 2)))
    return {
        "faces/1.png": _png(Image.new("RGB", (64, 64), (20, 1, 2))),
        "faces/2.png": _png(Image.new("L", (64, 64), 40)),                    # grey-scale
        "faces/3.png": _png(Image.new("RGBA", (64, 64), (60, 5, 5, 255))),   # RGBA, opaque
        "faces/4.png": _png(_palette(80)),                                   # palette
        "faces/5.png": good_png[: len(good_png) // 2],                       # truncated
        "faces/6.png": _png(Image.new("RGB", (100, 80), (120, 3, 3))),       # wrong size
        "faces/7.png": b"this is not an image at all\n",                     # not an image
        "faces/8.png": _png(Image.new("RGB", (16, 16), (160, 3, 3))),        # smaller than S
        "faces/9.tif": _png(Image.new("CMYK", (64, 64), (0, 0, 0, 0)), "TIFF"),  # CMYK (white)
        "faces/10.png": _png(Image.new("RGB", (64, 64), (200, 9, 9))),
        "faces/11.png": _png(Image.new("LA", (64, 64), (220, 0))),           # fully transparent -> white
        "faces/12.png": _png(Image.new("RGB", (32, 32), (240, 9, 9))),
    }


EXPECTED_TAGS = [20, 40, 60, 80, 120, 160, 255, 200, 255, 240]  # member order 1,2,3,4,6,8,9,10,11,12


def _write_zip(path: Path, members: dict[str, bytes], extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("faces/", b"")
        for name in reversed(list(members)):  # stored out of order on purpose
            zf.writestr(name, members[name])
        for name, body in (extra or {}).items():
            zf.writestr(name, body)
    return path


@pytest.fixture()
def face_zip(tmp_path: Path) -> Path:
    return _write_zip(tmp_path / "faces.zip", _members(), {"readme.txt": b"not counted", "__MACOSX/._1.png": b"fork"})


def _one_line_error(excinfo, *needles: str) -> None:
    text = str(excinfo.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, (needle, text)


def test_natural_order():
    names = ["data/10.png", "data/2.png", "data/1.png", "data/100.png"]
    assert sorted(names, key=natural_key) == ["data/1.png", "data/2.png", "data/10.png", "data/100.png"]


def test_zip_decoded_converted_and_bad_ones_counted(face_zip, tmp_path):
    fs = load_faces(face_zip, size=16, cache_root=tmp_path / "cache", progress=False)
    assert fs.images.dtype == np.uint8 and fs.images.shape == (10, 3, 16, 16)
    assert (fs.found, fs.skipped) == (10, 2)
    assert fs.images[:, 0, 0, 0].tolist() == EXPECTED_TAGS
    grey = fs.images[1]
    assert (grey == 40).all()  # grey-scale -> the same value in all three channels
    assert fs.images[2, :, 0, 0].tolist() == [60, 5, 5]  # RGBA -> RGB
    assert fs.images[3, :, 0, 0].tolist() == [80, 7, 7]  # palette -> its colour
    assert fs.source == face_zip and fs.source_hash.startswith("zip-")
    assert fs.cache_path.is_file() and fs.cache_path.parent == tmp_path / "cache"
    assert sorted(p.name for p in fs.cache_path.parent.iterdir()) == sorted(
        [fs.cache_path.name, fs.cache_path.with_suffix(".json").name]
    )  # no temp files left behind


def test_folder_gives_the_same_images(face_zip, tmp_path):
    folder = tmp_path / "images"
    for name, body in _members().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(body)
    (folder / "notes.txt").write_text("ignored")
    from_dir = load_faces(folder, size=32, cache_root=tmp_path / "c1", progress=False)
    from_zip = load_faces(face_zip, size=32, cache_root=tmp_path / "c2", progress=False)
    assert from_dir.source_hash.startswith("dir-")
    assert (from_dir.found, from_dir.skipped) == (10, 2)
    np.testing.assert_array_equal(from_dir.images, from_zip.images)


def test_second_call_loads_the_cache_without_decoding(face_zip, tmp_path, monkeypatch):
    first = load_faces(face_zip, size=16, cache_root=tmp_path, progress=False)
    first_images = np.array(first.images)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite a cache")

    monkeypatch.setattr(faces, "_decode", no_decoding)
    second = load_faces(face_zip, size=16, cache_root=tmp_path, progress=False)
    assert second.cache_path == first.cache_path and second.cache_path.is_file()
    assert (second.found, second.skipped) == (10, 2)
    np.testing.assert_array_equal(second.images, first_images)
    # a partial request is answered from the full cache: members 1..6 hold one truncated file
    part = load_faces(face_zip, size=16, cache_root=tmp_path, progress=False, max_images=6)
    assert (part.found, part.skipped) == (5, 1)
    np.testing.assert_array_equal(part.images, first_images[:5])


def test_key_changes_with_content_size_and_filter(face_zip, tmp_path):
    base = load_faces(face_zip, size=16, cache_root=tmp_path, progress=False)
    other_filter = load_faces(face_zip, size=16, resample="nearest", cache_root=tmp_path, progress=False)
    other_size = load_faces(face_zip, size=28, cache_root=tmp_path, progress=False)
    members = _members()
    members["faces/13.png"] = _png(Image.new("RGB", (64, 64), (1, 1, 1)))
    changed = load_faces(_write_zip(tmp_path / "faces2.zip", members), size=16, cache_root=tmp_path, progress=False)
    paths = {base.cache_path, other_filter.cache_path, other_size.cache_path, changed.cache_path}
    assert len(paths) == 4
    assert changed.source_hash != base.source_hash and changed.found == 11
    assert other_size.images.shape == (10, 3, 28, 28)


def test_max_images_decodes_only_the_first_members(face_zip, tmp_path):
    fs = load_faces(face_zip, size=16, cache_root=tmp_path, progress=False, max_images=3)
    assert (fs.found, fs.skipped) == (3, 0)
    assert fs.images[:, 0, 0, 0].tolist() == [20, 40, 60]
    assert "first3" in fs.cache_path.name
    everything = load_faces(face_zip, size=16, cache_root=tmp_path, progress=False, max_images=1000)
    assert everything.found == 10 and "first" not in everything.cache_path.name


def test_unreadable_images_only_is_an_error(tmp_path):
    bad = _write_zip(tmp_path / "bad.zip", {"1.png": b"nope", "2.png": b"also nope"})
    with pytest.raises(DataError) as excinfo:
        load_faces(bad, size=16, cache_root=tmp_path / "cache", progress=False)
    _one_line_error(excinfo, str(bad), "none of the 2 images")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing half-written


def test_failed_write_leaves_nothing_behind(face_zip, tmp_path, monkeypatch):
    def broken_save(fh, arr, allow_pickle=False):
        fh.write(b"half an array")
        raise OSError("disk full")

    monkeypatch.setattr(image_cache.np, "save", broken_save)
    with pytest.raises(DataError) as excinfo:  # one line naming the cache folder, not an OSError traceback
        load_faces(face_zip, size=16, cache_root=tmp_path / "cache", progress=False)
    _one_line_error(excinfo, str(tmp_path / "cache"), "cannot write the image cache", "disk full", "--cache-dir")
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("name", ["../x.png", "/x.png", "faces/../../x.png", "C:/x.png"])
def test_escaping_member_names_are_refused(tmp_path, name):
    members = {"1.png": _png(Image.new("RGB", (64, 64))), name: _png(Image.new("RGB", (64, 64)))}
    path = _write_zip(tmp_path / "evil.zip", members)
    with pytest.raises(DataError) as excinfo:
        load_faces(path, size=16, cache_root=tmp_path / "cache", progress=False)
    _one_line_error(excinfo, str(path), name, "escapes")


def test_missing_source(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_faces(tmp_path / "nowhere.zip", cache_root=tmp_path, progress=False)
    _one_line_error(excinfo, str(tmp_path / "nowhere.zip"), "missing")


@pytest.mark.parametrize("body", [b"", b"hello, I am a text file\n"])
def test_zip_that_is_not_a_zip(tmp_path, body):
    path = tmp_path / "faces.zip"
    path.write_bytes(body)
    with pytest.raises(DataError) as excinfo:
        load_faces(path, cache_root=tmp_path / "cache", progress=False)
    _one_line_error(excinfo, str(path), "not a zip")


def test_zip_without_images(tmp_path):
    path = _write_zip(tmp_path / "faces.zip", {"readme.txt": b"no pictures here"})
    with pytest.raises(DataError) as excinfo:
        load_faces(path, cache_root=tmp_path / "cache", progress=False)
    _one_line_error(excinfo, str(path), "no images")


@pytest.mark.parametrize("contents", [{}, {"notes.txt": "text only"}])
def test_empty_image_folder(tmp_path, contents):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, text in contents.items():
        (folder / name).write_text(text)
    with pytest.raises(DataError) as excinfo:
        load_faces(folder, cache_root=tmp_path / "cache", progress=False)
    _one_line_error(excinfo, str(folder), "empty")


def test_unknown_resample_filter(face_zip, tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_faces(face_zip, resample="smooth", cache_root=tmp_path, progress=False)
    _one_line_error(excinfo, str(face_zip), "smooth", "bilinear")


@pytest.mark.parametrize("size", [0, 15, 65, -16])
def test_bad_size(face_zip, tmp_path, size):
    with pytest.raises(DataError) as excinfo:
        load_faces(face_zip, size=size, cache_root=tmp_path, progress=False)
    _one_line_error(excinfo, str(face_zip), "size")


def test_bad_max_images(face_zip, tmp_path):
    with pytest.raises(DataError):
        load_faces(face_zip, cache_root=tmp_path, progress=False, max_images=0)


def test_split_is_deterministic_disjoint_and_complete():
    train, test = split_indices(100, test_frac=0.1, seed=3)
    again_train, again_test = split_indices(100, test_frac=0.1, seed=3)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(test, again_test)
    assert len(test) == 10 and len(train) == 90
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(range(100))
    other_train, _ = split_indices(100, test_frac=0.1, seed=4)
    assert not np.array_equal(train, other_train)
    assert split_indices(1, 0.5)[0].tolist() == [0]  # never an empty training set


@pytest.mark.parametrize("frac", [-0.1, 1.0, 2.0])
def test_split_rejects_bad_fraction(frac):
    with pytest.raises(DataError):
        split_indices(10, test_frac=frac)


@pytest.mark.integration
def test_real_faces_prefix(real_data_dir, tmp_path):
    from data.location import faces_source

    fs = load_faces(faces_source(real_data_dir), size=16, cache_root=tmp_path, progress=False, max_images=512)
    assert fs.images.shape == (512, 3, 16, 16) and fs.images.dtype == np.uint8
    assert (fs.found, fs.skipped) == (512, 0)
    assert fs.images.std() > 10  # real pictures, not a blank array


# ---- decompression bombs: bounded from the headers, while reading, and in pixels ----------------------------------

BOMB_BYTES = 64 * 2**20  # twice the per-image limit; deflates to about 64 KB


def _set_declared_sizes(path: Path, sizes: dict[str, int]) -> Path:
    """Rewrite members' uncompressed sizes in their local headers and central directory entries (data and CRC
    untouched): a zip whose headers lie, as a crafted archive's can."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        offsets = {name: zf.getinfo(name).header_offset for name in sizes}
    for name, size in sizes.items():
        struct.pack_into("<I", raw, offsets[name] + 22, size)  # local file header
    pos = raw.find(b"PK\x01\x02")
    while pos != -1:  # central directory entries
        n = struct.unpack_from("<H", raw, pos + 28)[0]
        name = raw[pos + 46: pos + 46 + n].decode()
        if name in sizes:
            struct.pack_into("<I", raw, pos + 24, sizes[name])
        pos = raw.find(b"PK\x01\x02", pos + 46 + n)
    path.write_bytes(bytes(raw))
    return path


def _pixel_bomb(side: int = 6000) -> bytes:
    """A PNG of a few KB that decodes to side x side pixels (36 million: 144 MB as RGBA)."""
    return _png(Image.new("1", (side, side)))


def _two_good() -> dict[str, bytes]:
    return {"faces/1.png": _png(Image.new("RGB", (64, 64), (20, 1, 2))),
            "faces/2.png": _png(Image.new("RGB", (64, 64), (40, 1, 2)))}


def _bomb_zip(path: Path) -> Path:
    """Two good images; 64 MiB of zeros (honest header); 64 MiB of zeros whose headers say 1,000 bytes; a real
    small PNG whose headers say 64 MiB; a pixel bomb."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in _two_good().items():
            zf.writestr(name, body)
        zf.writestr("faces/3.png", bytes(BOMB_BYTES))
        zf.writestr("faces/4.png", bytes(BOMB_BYTES))
        zf.writestr("faces/5.png", _png(Image.new("RGB", (64, 64), (60, 1, 2))))
        zf.writestr("faces/6.png", _pixel_bomb())
    return _set_declared_sizes(path, {"faces/4.png": 1000, "faces/5.png": BOMB_BYTES})


def test_bombs_are_skipped_with_their_reason(tmp_path):
    fs = load_faces(_bomb_zip(tmp_path / "bomb.zip"), size=16, cache_root=tmp_path / "cache", progress=False)
    assert (fs.found, fs.skipped) == (2, 4)
    reasons = {s["member"]: s["reason"] for s in json.loads(fs.cache_path.with_suffix(".json").read_text())["skipped"]}
    assert "declared size 64.0 MiB is above the 32.0 MiB limit per image; not read" in reasons["faces/3.png"]
    assert "declared size 64.0 MiB" in reasons["faces/5.png"]  # a small image behind a big header: still refused
    assert "CRC" in reasons["faces/4.png"]  # read stopped at the 1,000 bytes its header declared
    assert "6000x6000 = 36,000,000 pixels, above the 4096x4096 limit" in reasons["faces/6.png"]


def test_bombs_keep_peak_memory_low(tmp_path):
    """Measured in a fresh process (ru_maxrss is a lifetime peak): decoding the bomb zip adds < 32 MiB of RSS.

    Reading either 64 MiB member, or decoding the 36-megapixel PNG, would add 64 to 150 MB.
    """
    path = _bomb_zip(tmp_path / "bomb.zip")
    script = (
        "import resource, sys\n"
        "from data.faces import Image, load_faces\n"
        "Image.init()  # every Pillow plugin imported before the baseline\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "fs = load_faces(sys.argv[1], size=16, cache_root=sys.argv[2], progress=False)\n"
        "print(fs.found, fs.skipped, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "cache")], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]).stdout.split()
    found, skipped, delta_kib = (int(v) for v in out)
    assert (found, skipped) == (2, 4)
    assert delta_kib < 32 * 1024, f"peak RSS grew by {delta_kib / 1024:.0f} MiB"


def test_reading_stops_past_the_limit_whatever_the_header_said():
    """The bound while reading: a member (or a file that grew after it was listed) that yields more than the
    limit is refused after limit + 1 bytes, even though its header declared 100 bytes."""
    class Counting(io.BytesIO):
        asked: list[int] = []

        def read(self, n=-1):
            self.asked.append(n)
            return super().read(n)

    fh = Counting(bytes(faces.MAX_MEMBER_BYTES + 10))
    with pytest.raises(faces.OversizedImage, match="more than the 32.0 MiB limit per image .its header said 100 bytes"):
        faces._bounded_read(fh, 100)
    assert sum(fh.asked) == faces.MAX_MEMBER_BYTES + 1 and max(fh.asked) <= 2**20  # in 1 MiB reads, no further


def test_too_many_declared_bytes_in_all_fail_the_zip_in_one_line(tmp_path):
    """150 real 64x64 PNGs whose headers each declare 30 MiB (under the per-image limit): 4.4 GiB in all."""
    members = {f"faces/{i}.png": _png(Image.new("RGB", (64, 64), (i, 1, 2))) for i in range(150)}
    path = _set_declared_sizes(_write_zip(tmp_path / "many.zip", members), {n: 30 * 2**20 for n in members})
    with pytest.raises(DataError) as excinfo:
        load_faces(path, size=16, cache_root=tmp_path / "cache", progress=False)
    _one_line_error(excinfo, str(path), "4,500.0 MiB of images in all, above the 4,096.0 MiB limit", "bomb")
    assert not (tmp_path / "cache").exists()  # refused before anything was decoded or written


def test_folder_sizes_are_bounded_too(tmp_path):
    """Sparse files: large as far as stat says, no disk used."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "1.png").write_bytes(_png(Image.new("RGB", (64, 64), (20, 1, 2))))
    with (folder / "2.png").open("wb") as fh:
        fh.truncate(BOMB_BYTES)
    fs = load_faces(folder, size=16, cache_root=tmp_path / "cache", progress=False)
    assert (fs.found, fs.skipped) == (1, 1)
    for i in range(3, 140):
        with (folder / f"{i}.png").open("wb") as fh:
            fh.truncate(30 * 2**20)
    with pytest.raises(DataError) as excinfo:
        load_faces(folder, size=16, cache_root=tmp_path / "cache2", progress=False)
    _one_line_error(excinfo, str(folder), "above the 4,096.0 MiB limit")


# ---- the data folder is only read ---------------------------------------------------------------------------------

def _in_zip(members: dict[str, bytes], extra: dict[str, bytes] | None = None):
    def build(data: Path) -> Path:
        (data / "anime_faces").mkdir(parents=True)
        return _write_zip(data / "anime_faces" / "anime_faces.zip", members, extra)
    return build


def _in_folder(members: dict[str, str | bytes]):
    def build(data: Path) -> None:
        for name, body in members.items():
            path = data / "anime_faces" / "images" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body.encode() if isinstance(body, str) else body)
    return build


def _raw(body: bytes):
    def build(data: Path) -> None:
        (data / "anime_faces").mkdir(parents=True)
        (data / "anime_faces" / "anime_faces.zip").write_bytes(body)
    return build


def _bombs(data: Path) -> None:
    (data / "anime_faces").mkdir(parents=True)
    _bomb_zip(data / "anime_faces" / "anime_faces.zip")


def _many(data: Path) -> None:
    members = {f"faces/{i}.png": _png(Image.new("RGB", (8, 8))) for i in range(150)}
    _set_declared_sizes(_in_zip(members)(data), {n: 30 * 2**20 for n in members})


FIXTURES = {
    "good-zip": _in_zip(_members(), {"readme.txt": b"not counted", "__MACOSX/._1.png": b"fork"}),
    "good-folder": _in_folder({**_members(), "notes.txt": "ignored"}),
    "unreadable-only": _in_zip({"1.png": b"nope", "2.png": b"also nope"}),
    **{f"escaping-{name}": _in_zip({"1.png": _png(Image.new("RGB", (64, 64))), name: b"x"})
       for name in ("../x.png", "/x.png", "faces/../../x.png", "C:/x.png")},
    "not-a-zip-empty": _raw(b""),
    "not-a-zip-text": _raw(b"hello, I am a text file\n"),
    "no-images": _in_zip({"readme.txt": b"no pictures here"}),
    "empty-folder": _in_folder({"notes.txt": "text only"}),
    "bombs": _bombs,
    "too-many-bytes": _many,
}


@pytest.mark.parametrize("case", sorted(FIXTURES))
def test_the_data_folder_is_unchanged_by_every_fixture(tmp_path, monkeypatch, case):
    """Names, sizes and mtimes of everything in the data folder are the same after loading, good input or hostile;
    the cache, when one is made, is in $STUDY_CACHE_DIR."""
    from covid_fixture import snapshot

    from data.location import faces_source

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    FIXTURES[case](data)
    before = snapshot(data)
    try:
        fs = load_faces(faces_source(data), size=16, progress=False)
    except DataError:
        fs = None
    assert snapshot(data) == before
    if fs is not None:
        assert fs.cache_path.parent == tmp_path / "cache" / "faces"
    assert not (tmp_path / "xdg").exists()


def test_three_way_split_keeps_the_test_part_and_takes_validation_from_training():
    from data.faces import split_three

    train, val, test = split_three(200, val_frac=0.05, test_frac=0.1, seed=3)
    assert test.tolist() == split_indices(200, test_frac=0.1, seed=3)[1].tolist()
    assert len(val) == 10 and len(test) == 20 and len(train) == 170
    assert not set(train) & set(val) and not set(val) & set(test) and sorted([*train, *val, *test]) == list(range(200))
    with pytest.raises(DataError, match="val_frac"):
        split_three(10, val_frac=0.95, test_frac=0.1)
