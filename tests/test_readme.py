"""The README is the first thing a new user runs, and docs/*.md the next: every `study` command in them must parse,
they must not lean on files outside the repository, and they speak of the project as it is (no tracker numbers,
no work sessions)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from study.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {path.relative_to(ROOT).as_posix(): path.read_text()
        for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}


def shell_lines(text: str = README) -> list[str]:
    """Every command line of a document's ```bash blocks, comments stripped, continuation lines joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def study_commands(text: str = README) -> list[list[str]]:
    """The argv (after `study`) of every `study ...` command of a document: its ```bash lines, and the inline ones
    a sentence gives in full (`study run ...` with flags)."""
    out = []
    for line in shell_lines(text):
        for part in re.split(r"&&|;", line):
            words = shlex.split(part.strip())
            while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value study ...
                words = words[1:]
            if ">" in words:  # a redirection is the shell's, not the command's
                words = words[:words.index(">")]
            if words[:1] == ["study"]:
                out.append(words[1:])
    for span in re.findall(r"`(study [^`]+ --[^`]+)`", text):
        out.append(shlex.split(span)[1:])
    return out


COMMANDS = [(doc, argv) for doc, text in DOCS.items() for argv in study_commands(text)]


def test_readme_has_the_main_commands():
    first = {cmd[0] for cmd in study_commands(README) if cmd}
    assert {"data", "run", "resume", "report", "bench", "trainables"} <= first, first


def test_the_docs_are_found_and_the_readme_links_them():
    assert {"README.md", "docs/ARCHITECTURE.md", "docs/ANALYSIS.md", "docs/TRAINABLES.md", "docs/STUDIES.md",
            "docs/PERFORMANCE.md"} <= set(DOCS)
    for doc in DOCS:
        if doc != "README.md":
            assert f"`{doc}`" in README or f"({doc})" in README, f"the README does not name {doc}"


def parses(argv: list[str]) -> int | None:
    """None when `study ARGV` parses, else argparse's exit code."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as err:  # argparse exits 2 on a bad flag or choice
        return err.code
    return None


@pytest.mark.parametrize("doc, argv", COMMANDS, ids=[f"{d}: {' '.join(a)}"[:80] for d, a in COMMANDS])
def test_every_study_command_in_the_docs_parses(doc, argv):
    code = parses(argv)
    assert code is None, f"`study {' '.join(argv)}` from {doc} does not parse (exit {code})"


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_the_docs_need_nothing_outside_the_repository(doc):
    text = DOCS[doc]
    assert "../shared" not in text and "shared/reference" not in text
    for path in re.findall(r"`((?:docs|tests|study|data|analysis|trainables|examples)/[\w./-]+)`", text):
        assert (ROOT / path).exists(), f"{doc} names {path}, which is not in the repository"
    for link in re.findall(r"\]\(((?!https?:|#)[^)\s]+)\)", text):  # markdown links to files
        target = (ROOT / doc).parent / link.split("#", 1)[0]
        assert target.exists(), f"{doc} links {link}, which is not in the repository"


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_the_docs_speak_of_the_project_as_it_is(doc):
    text = DOCS[doc]
    assert not re.search(r"\bissue \d+|\bin this session\b|(?<![\w/])#\d{2,}\b", text, flags=re.I), doc
    assert "21,551" not in text  # the anime faces are 20,963 images


STUDY_FILES = [(doc, block) for doc, text in DOCS.items() for block in re.findall(r"```toml\n(.*?)```", text, flags=re.S)
               if "[[part]]" in block and ":" not in re.search(r'trainable = "([^"]*)"', block).group(1)]


@pytest.mark.parametrize("doc, text", STUDY_FILES, ids=[f"{d}: study file {i + 1}" for i, (d, _) in enumerate(STUDY_FILES)])
def test_every_study_file_in_the_docs_is_accepted(doc, text):
    """The study files the docs show (built-in trainables; docs/TRAINABLES.md's own is tests/test_docs_trainables.py's)
    pass every check `study run` makes of a file."""
    from study import studyfile

    assert studyfile.parse(text, doc).parts


def test_ci_runs_the_readmes_test_command():
    """.ci/run must run exactly what the README tells a user to run for the whole suite."""
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmds = [line for line in shell_lines(README) if line.startswith("pytest")]
    assert test_cmds, "the README gives no pytest command"
    assert f"python -m {test_cmds[0]}" in ci or test_cmds[0] in ci
