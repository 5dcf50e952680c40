"""The `read` workload of `study bench`: what reading a study costs at two sizes, and how that grows with its trials.

A synthetic study of N trials is made through the real `study run` (a plugin whose trial reports three epochs of a
formula, no torch; Optuna's TPE over two keys; 2 trials at a time; MLflow's sqlite store in the study folder), at a
smaller and a larger N (`--read-sizes`, default 10,1000). Then each read command runs in a fresh process, as a user
runs it, `repeats` times round-robin over the commands and sizes (a burst of load from another process lands on
every command alike), and the median is kept:

    study show DIR                                   study export DIR --to TMP
    python -c "from analysis import open_study; open_study(DIR).trials"
    study report --storage PARENT --name NAME --out TMP

and `python -c "import pandas"` beside them as the machine's yardstick (every one of them imports pandas). The
table gives each command's time at both sizes and larger / smaller: a read cost that does not grow with the trials
is a ratio near 1.

The studies are cached: a 1,000-trial study takes minutes to make. They are kept in the user cache folder
($STUDY_CACHE_DIR, else ~/.cache/study) under bench-read/KEY/read-N, where KEY is a hash of the code that writes a
study (data/, trainables/, study/ but the read-only commands and the benchmark), of the plugin and study file
below, and of the Ray, MLflow and Optuna versions: a change there makes new ones, a rerun reuses them (the output
says which). `--no-cache` makes them in the benchmark's scratch folder instead, deleted at the end.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from study.bench.timing import BenchRun
from trainables.names import SUMMARY_FILE

PLUGIN_MODULE = "formula_trial"
PLUGIN = '''"""`study bench --only read`: a trial that costs nothing, three epochs of a formula."""
from dataclasses import dataclass

from trainables import Trainable


@dataclass
class FormulaConfig:
    x: float = 0.5
    width: int = 8
    epochs: int = 3


def train(config, report, **context):
    for epoch in range(1, config.epochs + 1):
        loss = (config.x - 0.3) ** 2 + 1.0 / (epoch * config.width)
        report({"epoch": epoch, "val_loss": loss, "train_loss": 0.9 * loss, "test_loss": 1.1 * loss})


TRAINABLE = Trainable(name="formula", config=FormulaConfig, train=train, metric="val_loss", mode="min")
'''
STUDY_FILE = '''# `study bench --only read`: {n} search trials of a formula
[[part]]
trainable = "{module}:TRAINABLE"
num_samples = {n}
scheduler = "none"

[part.constants]
epochs = 3

[part.space]
x = {{ float = [0.0, 1.0] }}
width = {{ int = [2, 16] }}
'''
CONCURRENT = 2  # trials at once while the study is made
DONE = "bench-read.json"  # written into a study folder once it is complete: a folder without it is made again
# The files of the project that only read a study: a change to them leaves the cached studies as they are.
READ_ONLY = ("study/cmd_show.py", "study/cmd_report.py", "study/cmd_preset.py", "study/cmd_trainables.py")
ROOT = Path(__file__).resolve().parents[2]
YARDSTICK = "python -c \"import pandas\""


def commands(study_dir: Path, out: Path) -> dict[str, list[str]]:
    """Each timed read command, as an argv run in a fresh process; `out` is a fresh folder for what it writes."""
    py = sys.executable
    return {
        "study show": [py, "-m", "study", "show", str(study_dir)],
        "study export": [py, "-m", "study", "export", str(study_dir), "--to", str(out / "export")],
        "open_study(...).trials": [py, "-c", f"from analysis import open_study; open_study({str(study_dir)!r}).trials"],
        "study report": [py, "-m", "study", "report", "--storage", str(study_dir.parent), "--name", study_dir.name,
                         "--out", str(out / "report")],
    }


def code_key() -> str:
    """What a cached study depends on: the code that writes one, and the versions of the libraries that store it."""
    h = hashlib.sha256()
    files = sorted(p for pkg in ("data", "trainables", "study") for p in (ROOT / pkg).rglob("*.py"))
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("study/bench/") or rel in READ_ONLY:
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(f"{PLUGIN}\0{STUDY_FILE}\0{CONCURRENT}\0".encode())  # the study this workload makes
    for lib in ("ray", "mlflow", "optuna"):
        h.update(f"{lib}=={importlib.metadata.version(lib)}\0".encode())
    return h.hexdigest()[:12]


def cache_root() -> Path:
    from data.location import resolve_cache_dir

    return resolve_cache_dir() / "bench-read" / code_key()


def make_study(root: Path, n: int, log=print) -> dict[str, Any]:
    """The N-trial study under `root` (made through `study run` unless a complete one is there): its folder and how
    it came to be."""
    study_dir = root / f"read-{n}"
    done = study_dir / DONE
    if done.is_file():
        return {"path": str(study_dir), "reused": True, **json.loads(done.read_text())}
    if study_dir.exists():  # an interrupted build: ours, made again
        shutil.rmtree(study_dir)
    project = root / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / f"{PLUGIN_MODULE}.py").write_text(PLUGIN)
    study_file = project / f"{study_dir.name}.toml"
    study_file.write_text(STUDY_FILE.format(n=n, module=PLUGIN_MODULE))
    log(f"study bench: read: making a {n}-trial study in {study_dir} ({CONCURRENT} trials at a time) ...")
    run_log = root / f"read-{n}.log"
    t0 = time.perf_counter()
    with open(run_log, "w") as out:  # a file, not a pipe: Ray's and the progress lines stay out of the bench's
        proc = subprocess.run([sys.executable, "-m", "study", "run", str(study_file), "--storage", str(root),
                               "--name", study_dir.name, "--max-concurrent", str(CONCURRENT), "--seed", "0"], cwd=root, stdout=out, stderr=subprocess.STDOUT)
    build_s = time.perf_counter() - t0
    summary = json.loads((study_dir / SUMMARY_FILE).read_text())[-1] if (study_dir / SUMMARY_FILE).is_file() else {}
    if proc.returncode != 0 or summary.get("trials") != n or summary.get("errored"):
        tail = run_log.read_text()[-2000:]
        raise RuntimeError(f"the {n}-trial read study did not finish cleanly (exit {proc.returncode}, log "
                           f"{run_log}):\n{tail}")
    made = {"trials": n, "build_s": build_s, "made_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    done.write_text(json.dumps(made))
    log(f"study bench: read: {n} trials made in {build_s:.0f} s")
    return {"path": str(study_dir), "reused": False, **made}


def timed(argv: list[str], cwd: Path) -> float:
    """Seconds a command takes in a fresh process; a failing one stops the workload with its own last lines."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return took


def bench_read(run: BenchRun) -> dict[str, Any]:
    small, large = run.sizes.read_trials
    repeats = run.sizes.read_repeats
    root = cache_root() if run.cache else run.workdir / "read"
    studies = {n: make_study(root, n) for n in (small, large)}
    scratch = run.workdir / "read-out"
    times: dict[str, dict[str, list[float]]] = {}
    yardstick: list[float] = []
    for r in range(repeats):
        for n in (small, large):
            out = scratch / f"{n}-{r}"
            out.mkdir(parents=True)
            for name, argv in commands(Path(studies[n]["path"]), out).items():
                times.setdefault(name, {}).setdefault(str(n), []).append(timed(argv, out))
            shutil.rmtree(out)  # a report of 1,000 trials is not kept around
            yardstick.append(timed([sys.executable, "-c", "import pandas"], scratch))
    medians = {name: {n: statistics.median(ts) for n, ts in by_n.items()} for name, by_n in times.items()}
    return {
        "workload": "read", "what": f"show, export, open_study, report of a {small}- and a {large}-trial study",
        "sizes": [small, large], "repeats": repeats, "cached": run.cache, "studies": {str(n): s for n, s in studies.items()},
        "times_s": times, "median_s": medians,
        "ratio": {name: m[str(large)] / m[str(small)] for name, m in medians.items()},
        "yardstick": YARDSTICK, "yardstick_s": statistics.median(yardstick), "yardstick_runs_s": yardstick,
    }


def read_note(row: dict[str, Any], quick: bool) -> list[str]:
    """The read table: per command its median time at each size and larger / smaller, then the yardstick."""
    small, large = row["sizes"]
    lines = ["", f"Read: median of {row['repeats']} runs each, in fresh processes (a user's command from start to end)",
             "", f"| command | {small} trials | {large:,} trials | {large:,} / {small} |", "| --- | ---: | ---: | ---: |"]
    for name, m in row["median_s"].items():
        lines.append(f"| {name} | {m[str(small)]:.2f} s | {m[str(large)]:.2f} s | {row['ratio'][name]:.2f}x |")
    lines.append(f"| {row['yardstick']} (the machine's yardstick) | {row['yardstick_s']:.2f} s | | |")
    lines.append("")
    for n, s in row["studies"].items():
        how = (f"reused from the cache (made {s['made_at']} in {s['build_s']:.0f} s)" if s["reused"]
               else f"made now in {s['build_s']:.0f} s" + (", kept in the cache" if row["cached"] else ""))
        lines.append(f"- the {int(n):,}-trial study: {s['path']}, {how}")
    if row["cached"]:
        lines.append("  (cached by the code that writes a study; `--no-cache` makes them afresh in a scratch folder)")
    return lines
