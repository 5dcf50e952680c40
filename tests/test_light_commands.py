"""`study --help`, `study preset list` and `study show --help` answer without the heavy libraries.

Each command runs in a fresh interpreter and lists which of torch, Ray, MLflow and Optuna it imported: none may be
there (Optuna with numpy alone costs about 0.2 s, as much as the rest of the command). No time is asserted; the
imports are what a slow `--help` is made of.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "mlflow", "optuna")


@pytest.mark.parametrize("args", [["--help"], ["preset", "list"], ["show", "--help"]])
def test_light_commands_import_no_heavy_library(args: list[str]) -> None:
    code = textwrap.dedent(f"""
        import sys
        from study.cli import main
        try:
            code = main({args!r})
        except SystemExit as stop:
            code = stop.code
        print("CODE", code, file=sys.stderr)
        print("HEAVY", sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.splitlines()
    assert "CODE 0" in lines, proc.stderr  # the command itself worked
    assert lines[-1] == "HEAVY []", proc.stderr
    assert proc.stdout.strip(), "the command printed nothing"


def test_a_study_file_still_builds_optuna_distributions() -> None:
    """The lazy import did not change what a space is: Optuna's own distributions, written back as they were read."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from study import studyfile

    spec = {"choices": ["a", "b"]}, {"int": [1, 7], "step": 2}, {"float": [1e-4, 1e-1], "log": True}
    dists = [studyfile.distribution(s, "space.k", "x.toml") for s in spec]
    assert [type(d) for d in dists] == [CategoricalDistribution, IntDistribution, FloatDistribution]
    assert [studyfile.space_spec(d) for d in dists] == list(spec)
    assert studyfile.edges(dists[1]) == [1, 3, 5, 7]
