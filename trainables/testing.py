"""A test kit for trainables: what a plugin author's own `test_my_model.py` calls.

- `check_trainable(TRAINABLE, **settings)` runs a short fit in this process, through the same reading of each
  report as a study (`trainables.reports`), and asserts the contract: epochs 1..n each reported once with a finite
  objective, a resume from every epoch's checkpoint repeating the uninterrupted curve, the declared artifacts
  written, and `memory` (where the trainable gives it) above the measured peak. A broken part of the contract is an
  AssertionError that says which.
- `smoke_study(TRAINABLE or study file, tmp_path)` runs a two-trial study through the real `study run` (Ray Tune,
  Optuna, MLflow) in a process of its own and returns its `open_study` view.

Imports neither Ray nor MLflow (nor torch): a plugin's unit tests pay only for what the plugin imports.
"""
from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.names import EARLY_STOPPED, EPOCH
from trainables.reports import EpochMarks, ReportError, ReportReader, checkpoint_epoch, reader_for
from trainables.trainable import BUDGET, Trainable

# Per-epoch timings differ from run to run: never compared between the uninterrupted and the resumed curves.
TIMING_SUFFIX = "time_s"


@dataclass
class Checked:
    """What `check_trainable` saw: the uninterrupted curve (one plain dict per epoch), the epochs a resume was
    checked from, the artifacts written, the peak memory measured beyond the process' own and the estimate."""

    curve: list[dict[str, int | float]]
    resumed_from: list[int] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    peak_bytes: int | None = None
    memory_bytes: int | None = None


class _Fail(AssertionError):
    pass


def _fail(trainable: Trainable, part: str, message: str) -> None:
    raise _Fail(f"{trainable.name}: {part}: {message}")


def _rss() -> int | None:
    """This process' resident memory in bytes (Linux /proc); None where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class _Peak:
    """The highest resident memory of this process while the block runs, sampled every few milliseconds."""

    def __init__(self, every_s: float = 0.002):
        self.every_s, self.peak, self._stop = every_s, _rss(), threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            now = _rss()
            if now is not None and self.peak is not None:
                self.peak = max(self.peak, now)

    def __enter__(self) -> _Peak:
        self._thread = threading.Thread(target=self._sample, daemon=True, name="check-trainable-rss")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        now = _rss()
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)


def _fit(trainable: Trainable, cfg: Any, data: Any, work: Path, reader: ReportReader,
         resume_from: Path | None, snapshots: Path | None) -> list[dict[str, int | float]]:
    """One `train` call as a study's trial makes it: each report read once, the checkpoint folder marked with its
    epoch and (with `snapshots`) copied aside per epoch, as Tune keeps it."""
    checkpoint_dir, artifact_dir = work / "checkpoint", work / "artifacts"
    curve: list[dict[str, int | float]] = []
    marks = EpochMarks()

    def report(metrics: dict[str, Any]) -> None:
        clean = reader.read(metrics)
        epoch = int(clean[EPOCH])
        if marks.mark(checkpoint_dir, epoch):
            if snapshots is not None:
                shutil.copytree(checkpoint_dir, snapshots / str(epoch))
        curve.append(clean)

    trainable.train(cfg, report, checkpoint_dir=checkpoint_dir, resume_from=resume_from, artifact_dir=artifact_dir,
                    data=data)
    reader.finish()
    return curve


def check_trainable(trainable: Trainable, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9,
                    resumable: bool = True, ignore: tuple[str, ...] = (), **settings: Any) -> Checked:
    """Run a short fit of `trainable` with `settings` (its config's keys; keep `epochs` small: a resume is run from
    every epoch's checkpoint) and assert its contract. `rel_tol`/`abs_tol`: how close a resumed run's numbers must
    be to the uninterrupted run's (per-epoch timings, `*time_s`, and the keys in `ignore` are not compared);
    `resumable=False` for a trainable that writes no checkpoint (a retried trial starts over)."""
    if not isinstance(trainable, Trainable):
        raise TypeError(f"check_trainable takes a trainables.Trainable, got a {type(trainable).__name__}")
    try:
        cfg = trainable.make_config(settings)
    except (TypeError, ValueError) as err:
        raise _Fail(f"{trainable.name}: config: {err}") from None
    budget = int(getattr(cfg, BUDGET))
    before = _rss()
    data, _ = trainable.data_for(cfg)
    if trainable.check is not None:
        trainable.check(cfg, data)
    with tempfile.TemporaryDirectory(prefix="check-trainable-") as tmp:
        work, snapshots = Path(tmp) / "fit", Path(tmp) / "checkpoints"
        snapshots.mkdir()
        with _Peak() as peak:
            try:
                curve = _fit(trainable, cfg, data, work, ReportReader(trainable.metric, budget), None, snapshots)
            except ReportError as err:
                raise _Fail(f"{trainable.name}: report: {err}") from None
        out = Checked(curve=curve)
        last = curve[-1]
        if int(last[EPOCH]) != budget and not last.get(EARLY_STOPPED):
            _fail(trainable, "epochs", f"the last report was epoch {last[EPOCH]} of {budget}, without "
                                       f"{EARLY_STOPPED} = 1 (a run that ends itself early says so)")
        _check_artifacts(trainable, work / "artifacts", "the uninterrupted run")
        out.artifacts = sorted(p.name for p in (work / "artifacts").iterdir()) if (work / "artifacts").is_dir() else []
        if trainable.memory is not None and before is not None and peak.peak is not None:
            out.peak_bytes, out.memory_bytes = peak.peak - before, int(trainable.memory(cfg, data))
            if out.memory_bytes < out.peak_bytes:
                _fail(trainable, "memory", f"estimated {out.memory_bytes / 2**20:.1f} MiB, measured a peak of "
                                           f"{out.peak_bytes / 2**20:.1f} MiB beyond the process' own")
        saved = sorted(int(p.name) for p in snapshots.iterdir())
        if resumable and not saved:
            _fail(trainable, "resume", "no checkpoint was written (write the state into checkpoint_dir before each "
                                       "report, or pass resumable=False)")
        by_epoch = {int(m[EPOCH]): m for m in curve}
        for saved_at in saved:
            epoch = checkpoint_epoch(snapshots / str(saved_at)) or saved_at  # the epoch of the state it holds
            if epoch >= int(last[EPOCH]) or epoch in out.resumed_from:
                continue  # the last epoch's state (nothing is left to run), or a state already resumed from
            resumed_work = Path(tmp) / f"resume-{epoch}"
            try:
                again = _fit(trainable, cfg, data, resumed_work, reader_for(trainable.metric, budget,
                                                                             snapshots / str(saved_at)),
                             snapshots / str(saved_at), None)
            except ReportError as err:
                raise _Fail(f"{trainable.name}: resume from epoch {epoch}: report: {err}") from None
            _same_curve(trainable, epoch, [by_epoch[e] for e in sorted(by_epoch) if e > epoch], again,
                        rel_tol, abs_tol, ignore)
            _check_artifacts(trainable, resumed_work / "artifacts", f"the run resumed from epoch {epoch}")
            out.resumed_from.append(epoch)
    return out


def _check_artifacts(trainable: Trainable, folder: Path, which: str) -> None:
    missing = [name for name in trainable.artifacts if not (folder / name).exists()]
    if missing:
        _fail(trainable, "artifacts", f"{which} did not write {', '.join(missing)} into artifact_dir "
                                      f"(declared in artifacts=)")


def _same_curve(trainable: Trainable, start: int, expected: list[dict], got: list[dict], rel_tol: float,
                abs_tol: float, ignore: tuple[str, ...]) -> None:
    where = f"resume from epoch {start}"
    if [m[EPOCH] for m in got] != [m[EPOCH] for m in expected]:
        _fail(trainable, where, f"reported epochs {[m[EPOCH] for m in got]}, the uninterrupted run "
                                f"{[m[EPOCH] for m in expected]}")
    for want, have in zip(expected, got):
        for key in sorted(set(want) | set(have)):
            if key.endswith(TIMING_SUFFIX) or key in ignore:
                continue
            if key not in have or key not in want:
                _fail(trainable, where, f"epoch {want[EPOCH]} reports {key!r} in one run and not the other")
            if not math.isclose(have[key], want[key], rel_tol=rel_tol, abs_tol=abs_tol):
                _fail(trainable, where, f"epoch {want[EPOCH]}: {key} = {have[key]!r} where the uninterrupted run "
                                        f"had {want[key]!r} (rel_tol {rel_tol:g}); save every state the next epoch "
                                        "needs (weights, optimizer, RNG) in the checkpoint")


# ------------------------------------------------------------------------------------------------- smoke_study
def _reference(trainable: Trainable) -> tuple[str, Path | None]:
    """How a study file names `trainable`: a built-in's or entry point's name, else `module:attribute` of the
    module that defines it (and that module's folder when it is a file beside other files, not installed)."""
    from trainables import registry

    try:
        if registry.get(trainable.name) is trainable:
            return trainable.name, None
    except registry.PluginError:
        pass
    for name, module in list(sys.modules.items()):
        for attr, value in list(vars(module).items()) if module is not None else []:
            if value is trainable and not name.startswith("__"):
                top = name.split(".", 1)[0]
                spec = importlib.util.find_spec(top)
                origin = Path(spec.origin) if spec is not None and spec.origin else None
                folder = origin.parent.parent if spec is not None and spec.submodule_search_locations else \
                    (origin.parent if origin else None)
                installed = folder is not None and any(p in ("site-packages", "dist-packages") for p in folder.parts)
                return f"{name}:{attr}", None if installed else folder
    raise ValueError(f"{trainable.name}: cannot find the module attribute that holds this Trainable; give its "
                     "study file instead")


def _copy_plugin_folder(folder: Path, into: Path) -> None:
    """The plugin's own files (its .py modules and packages), as a study ships the study file's folder."""
    into.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.suffix == ".py" and path.is_file():
            shutil.copy2(path, into / path.name)
        elif path.is_dir() and (path / "__init__.py").is_file():
            shutil.copytree(path, into / path.name, ignore=shutil.ignore_patterns("__pycache__"))


def smoke_study(target: Trainable | str | Path, tmp_path: str | Path, *, trials: int = 2,
                settings: dict[str, Any] | None = None, data_dir: str | Path | None = None,
                timeout_s: float = 600, env: dict[str, str] | None = None) -> Any:
    """A `trials`-trial study of `target` (a Trainable, or a study file run as written but for its number of
    searched trials) through `study run` in a process of its own, on this machine, into `tmp_path/studies`; returns
    `analysis.open_study` of its folder. `settings` go to every trial (`--set`); an AssertionError carries the
    command's output when it does not exit 0."""
    tmp = Path(tmp_path)
    if isinstance(target, Trainable):
        ref, folder = _reference(target)
        home = tmp / "plugin"
        if folder is not None:
            _copy_plugin_folder(folder, home)
        home.mkdir(parents=True, exist_ok=True)
        study_file = home / "smoke.toml"
        study_file.write_text("\n".join([
            'name = "smoke"', "", "[[part]]", f"trainable = {_toml(ref)}", "num_samples = 0", 'scheduler = "none"',
            f"fixed = [{', '.join(['{}'] * trials)}]", ""]), encoding="utf-8")
        name, extra = "smoke", []
    else:
        study_file = Path(target).resolve()
        doc = tomllib.loads(study_file.read_text(encoding="utf-8"))
        fixed = min((len(p.get("fixed", [])) for p in doc.get("part", [])), default=0)
        name = str(doc.get("name", study_file.stem))
        extra = ["--num-samples", str(max(0, trials - fixed))]
    args = [sys.executable, "-m", "study", "run", str(study_file), "--storage", str(tmp / "studies"),
            "--name", name, *extra]
    for key, value in (settings or {}).items():
        args += ["--set", f"{key}={_json(value)}"]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    proc = subprocess.run(args, cwd=tmp, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode != 0:
        raise AssertionError(f"smoke_study: `study run` exited {proc.returncode}\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    from analysis.api import open_study  # the reader, imported only when a study exists to read

    return open_study(tmp / "studies" / name)


def _toml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _json(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, str) else value


__all__ = ["Checked", "check_trainable", "smoke_study"]
