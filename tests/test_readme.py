"""The README is the first thing a new user runs: every `study` command in it must parse, it must not lean on
files outside the repository, and it speaks of the project as it is (no tracker numbers, no work sessions)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from study.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _shell_lines() -> list[str]:
    """Every command line of the README's ```bash blocks, comments stripped, continuation lines joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _study_commands() -> list[list[str]]:
    out = []
    for line in _shell_lines():
        for part in re.split(r"&&|;", line):
            words = shlex.split(part.strip())
            while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value study ...
                words = words[1:]
            if ">" in words:  # a redirection is the shell's, not the command's
                words = words[:words.index(">")]
            if words[:1] == ["study"]:
                out.append(words[1:])
    # and the inline ones a sentence gives in full: `study run ...` with flags
    for span in re.findall(r"`(study [^`]+ --[^`]+)`", README):
        out.append(shlex.split(span)[1:])
    return out


def test_readme_has_the_main_commands():
    first = {cmd[0] for cmd in _study_commands() if cmd}
    assert {"data", "run", "resume", "report", "bench"} <= first, first


@pytest.mark.parametrize("argv", _study_commands(), ids=lambda a: " ".join(a)[:60])
def test_every_study_command_in_the_readme_parses(argv):
    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as err:  # argparse exits 2 on a bad flag or choice
        pytest.fail(f"`study {' '.join(argv)}` from the README does not parse (exit {err.code})")


def test_readme_needs_nothing_outside_the_repository():
    assert "../shared" not in README and "shared/reference" not in README
    for path in re.findall(r"`((?:docs|tests|study|data|analysis|trainables)/[\w./-]+)`", README):
        assert (ROOT / path).exists(), f"README names {path}, which is not in the repository"


def test_readme_speaks_of_the_project_as_it_is():
    assert not re.search(r"\bissue \d+|\bin this session\b", README, flags=re.I)
    assert "21,551" not in README  # the anime faces are 20,963 images


def test_ci_runs_the_readmes_test_command():
    """.ci/run must run exactly what the README tells a user to run for the whole suite."""
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmds = [line for line in _shell_lines() if line.startswith("pytest")]
    assert test_cmds, "the README gives no pytest command"
    assert f"python -m {test_cmds[0]}" in ci or test_cmds[0] in ci
