"""The workloads of `study bench`, in the order they run: a name, how to run it, why it may be skipped.

A new workload is one more entry here (a function of a `BenchRun` returning a row, and optionally a skip check
and the lines printed under the table); the command line and the table need no change.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from study.bench.fused import bench_fused, fused_note
from study.bench.read_workload import bench_read, read_note
from study.bench.study_workload import bench_study, study_missing, study_note
from study.bench.timing import BenchRun
from study.bench.vae_study import bench_vae_study, vae_study_missing, vae_study_note
from study.bench.workloads import SEQUENCE_WORKLOADS, VAE_WORKLOADS, bench_sequence, bench_vae


@dataclass(frozen=True)
class Workload:
    name: str
    run: Callable[[BenchRun], dict[str, Any]]
    # data_dir -> None when it can run, else the reason it is skipped (printed and kept in the JSON)
    missing: Callable[[str | None], str | None] | None = None
    # (row, quick) -> lines printed under the table
    note: Callable[[dict[str, Any], bool], list[str]] | None = None
    # in a plain `study bench` (and --quick); False: only when --only names it
    default: bool = True


WORKLOADS: dict[str, Workload] = {
    **{cell: Workload(cell, partial(bench_sequence, cell)) for cell in SEQUENCE_WORKLOADS},
    **{name: Workload(name, partial(bench_vae, name)) for name in VAE_WORKLOADS},
    "fused": Workload("fused", bench_fused, note=fused_note),
    "study": Workload("study", bench_study, study_missing, study_note),
    "vae-study": Workload("vae-study", bench_vae_study, vae_study_missing, vae_study_note),
    # Reading studies, not training: minutes to make its 1,000-trial study the first time, so only on request.
    "read": Workload("read", bench_read, note=read_note, default=False),
}
DEFAULT_WORKLOADS = [name for name, w in WORKLOADS.items() if w.default]
