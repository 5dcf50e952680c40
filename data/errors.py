"""One error type for bad input, so the CLI can print it as one line and exit 2."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad or missing input. ``str(err)`` is a single line naming the file (when there is one) and the problem."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.problem = " ".join(str(problem).split())  # never multi-line
        super().__init__(f"{self.path}: {self.problem}" if self.path is not None else self.problem)


class MissingData(DataError):
    """A dataset that is not there at all (as opposed to present but malformed).

    `study data check` with no dataset named reports a missing one as one line and goes on with the other, while
    a malformed one still fails the check; ``problem`` starts with "missing" and says what to do.
    """
