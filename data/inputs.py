"""Files a user or a study folder names, read by one rule: a regular file of bounded size, parsed with bounded
nesting. A FIFO, a device or a folder is refused (never waited on or read without end), and a deeply nested TOML
or JSON document is one line, never a RecursionError. `study run` (study files, --fixed, --set), `study resume`
and every reader of a study folder's study.json (analysis) use it.
"""
from __future__ import annotations

import os
import stat

MAX_INPUT_BYTES = 1 << 20  # a study file, a --fixed file, study.json: the homework preset is 6 KiB
MAX_DEPTH = 32             # lists and tables inside each other: a study file needs 5


class InputError(ValueError):
    """A file or text that is not a bounded input (kind of file, size, nesting); `str()` is the problem."""


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
