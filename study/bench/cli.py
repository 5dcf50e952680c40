"""`study bench`: the project's training paths against the homework reports' plain PyTorch loops, in one run.

Every reference workload runs twice in this process (a study workload: in a child process of its own, see
`OWN_PROCESS`): (a) `study.bench.plain` (TensorDataset + DataLoader with
shuffle, per-batch `.to(device)`, float32, `.item()` per batch, one model at a time) and (b) the project's own
code path (`trainables.sequence.fit`, `trainables.vae.fit`, `study.runner.run_study`) with the same model, the
same data sizes and the same batch size. Workloads 1-3 (`study.bench.workloads`) use synthetic tensors of the
real shapes and need no data files, as does `fused` (`study.bench.fused`: the K = 6 models of one covid trial
trained at once against the same 6 plain runs in a row); the studies (`study.bench.study_workload`,
`study.bench.vae_study`) train on the real COVID windows and faces and are skipped, with the reason printed, when
those files are missing. The `read` workload (`study.bench.read_workload`) times reading a study, not training
one, at two sizes; it runs only when `--only` names it.
The workloads and their order are `study.bench.registry.WORKLOADS`; the timing rules are in
`study.bench.timing` and the overhead's definition in `study.bench.study_workload`.

Threads: workloads 1-3 train one model at a time on both sides with the same torch thread count (`--threads`,
default torch's own: one per core), so the comparison is the loop, not the threading; `fused` runs both sides at
1 thread (or `--threads`), as a study trial does; the studies give each trial 1 CPU and run as many at once as
there are cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from study.bench.registry import DEFAULT_WORKLOADS, WORKLOADS
from study.bench.timing import FULL, QUICK, BenchRun
from study.cli import UsageError


def machine_info(device: str) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "device": device, "threads": torch.get_num_threads()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# Workloads that start a local Ray (through run_study). Each runs in a child process of its own: a process's Ray driver
# keeps the auth token of its first Ray for good, and every local study's Ray has a fresh one (study.local_ray).
OWN_PROCESS = ("study", "vae-study")


def _run_workload(name: str, run: BenchRun) -> dict[str, Any]:
    """A workload in a child process set up as `run_bench` sets up its own (allocator, torch threads), with the
    local study's Ray environment set before the workload imports ray."""
    import torch

    from study.local_ray import local_environment
    from trainables.common import keep_freed_memory

    keep_freed_memory()
    if run.threads:
        torch.set_num_threads(run.threads)
    with local_environment():
        return WORKLOADS[name].run(run)


def _in_own_process(name: str, run: BenchRun) -> dict[str, Any]:
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    sys.stdout.flush()  # our lines before the child's
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_run_workload, name, run).result()


def run_bench(workloads: list[str], quick: bool, device: str, data_dir: str | None = None,
              threads: int | None = None, log=print, read_sizes: tuple[int, int] | None = None,
              cache: bool = True) -> dict[str, Any]:
    import torch

    from trainables.common import keep_freed_memory

    if threads:
        torch.set_num_threads(threads)
    # Both sides of every workload run in this process under the allocator setting our trainables make.
    allocator = keep_freed_memory()
    sizes = QUICK if quick else FULL
    if read_sizes:
        sizes = dataclasses.replace(sizes, read_trials=read_sizes)
    result: dict[str, Any] = {"quick": quick, "machine": machine_info(device) | {"allocator_keeps_freed": allocator},
                              "sizes": dataclasses.asdict(sizes),
                              "rows": [], "skipped": []}
    if quick and any(WORKLOADS[w].default for w in workloads):
        log("study bench --quick: scaled down from the reference workloads: "
            f"{sizes.windows:,} windows (not 10,000), homework VAE at {sizes.vae_homework_images:,} images and "
            f"default VAE at {sizes.vae_default_images:,} (not 21,551), study of {sizes.study_trials} trials x "
            f"{sizes.study_epochs} epochs (not 16 x 10), VAE study of {sizes.vae_study_trials} trials x "
            f"{sizes.vae_study_epochs} epochs on {sizes.vae_study_images:,} faces (not {FULL.vae_study_trials} x "
            f"{FULL.vae_study_epochs} on {FULL.vae_study_images:,}), fused K=6 on {sizes.fused_windows:,} windows "
            f"(not {FULL.fused_windows:,})")
    with tempfile.TemporaryDirectory(prefix="study-bench-") as tmp:
        for name in workloads:
            w = WORKLOADS[name]
            log(f"study bench: {name} ...")
            reason = w.missing(data_dir) if w.missing else None
            if reason:
                log(f"study bench: skipping the {name} workload: {reason}")
                result["skipped"].append({"workload": name, "reason": reason})
                continue
            t0 = time.perf_counter()
            run = BenchRun(sizes, device, data_dir, Path(tmp), threads, cache)
            row = _in_own_process(name, run) if name in OWN_PROCESS else w.run(run)
            row["bench_s"] = time.perf_counter() - t0
            result["rows"].append(row)
            if "plain_s" in row:
                log(f"study bench: {name}: plain {row['plain_s']:.3f} {row['unit']}, ours {row['ours_s']:.3f}, "
                    f"speedup {row['speedup']:.2f}x ({row['bench_s']:.0f} s)")
            else:  # a workload with its own table (read)
                log(f"study bench: {name}: done ({row['bench_s']:.0f} s)")
    return result


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table (it goes into the README as it is), then each workload's notes. A row without a plain
    side (read) is left out of the table: its note is a table of its own."""
    m = result["machine"]
    lines = [
        f"device {m['device']}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, {m['cores']} cores ({m['cpu']}), "
        f"torch {m['torch']}, {m['threads']} threads"
        f"{', glibc keeps freed memory (both sides)' if m.get('allocator_keeps_freed') else ''}"
        f"{', QUICK sizes' if result['quick'] else ''}",
    ]
    compared = [r for r in result["rows"] if "plain_s" in r]
    if compared or result["skipped"]:
        lines += ["", "| workload | what | plain | ours | speedup (plain / ours) |", "| --- | --- | ---: | ---: | ---: |"]
    for r in compared:
        if "plain_trial_epochs_per_s" in r:  # a study: trials x epochs per second of wall time
            plain = f"{r['plain_trial_epochs_per_s']:.2f} trial-epochs/s"
            ours = f"{r['ours_trial_epochs_per_s']:.2f} trial-epochs/s"
        elif "plain_model_epochs_per_s" in r:  # several models: model-epochs per second
            plain = f"{r['plain_model_epochs_per_s']:.2f} model-epochs/s"
            ours = f"{r['ours_model_epochs_per_s']:.2f} model-epochs/s"
        else:
            plain, ours = f"{r['plain_s']:.3f} s/epoch", f"{r['ours_s']:.3f} s/epoch"
        lines.append(f"| {r['workload']} | {r['what']} | {plain} | {ours} | {r['speedup']:.2f}x |")
    for s in result["skipped"]:
        lines.append(f"| {s['workload']} | skipped: {s['reason']} | | | |")
    for r in result["rows"]:
        w = WORKLOADS.get(r["workload"])
        if w is not None and w.note is not None:
            lines += w.note(r, result["quick"])
    return "\n".join(lines)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def _parse_only(value: str | None) -> list[str]:
    if not value:
        return list(DEFAULT_WORKLOADS)
    chosen = [w.strip() for w in value.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown or not chosen:
        raise UsageError(f"--only {value!r}: expected a comma list of {', '.join(WORKLOADS)}")
    return [w for w in WORKLOADS if w in chosen]


def _parse_read_sizes(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        small, large = (int(v) for v in value.split(","))
    except ValueError:
        raise UsageError(f"--read-sizes {value!r}: expected two trial counts, smaller first, e.g. 10,1000") from None
    if not 1 <= small < large:
        raise UsageError(f"--read-sizes {value!r}: expected two trial counts, smaller first, e.g. 10,1000")
    return small, large


def _bench(args: argparse.Namespace) -> int:
    import torch

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device here")
    json_path = Path(args.json) if args.json else None
    if json_path is not None and not json_path.parent.is_dir():
        raise UsageError(f"--json {args.json}: folder {json_path.parent} does not exist")
    workloads = _parse_only(args.only)
    read_sizes = _parse_read_sizes(args.read_sizes)
    result = run_bench(workloads, args.quick, device, args.data_dir, args.threads, read_sizes=read_sizes,
                       cache=not args.no_cache)
    result["command"] = "study bench" + "".join(
        f" {flag}" for flag in (["--quick"] if args.quick else []) + [f"--device {device}"]
        + ([f"--only {','.join(workloads)}"] if args.only else []) + ([f"--threads {args.threads}"] if args.threads else [])
        + ([f"--read-sizes {args.read_sizes}"] if args.read_sizes else []) + (["--no-cache"] if args.no_cache else []))
    print()
    print(format_table(result))
    if json_path is not None:
        _write_json(json_path, result)
        print(f"\nstudy bench: wrote {json_path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time the project's training paths against the homework's plain PyTorch loops")
    p.add_argument("--quick", action="store_true", help="scaled-down workloads: a few minutes on a 2-core CPU")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when torch sees one, else cpu")
    p.add_argument("--json", metavar="FILE", help="write every row, the machine and the sizes as JSON")
    p.add_argument("--only", metavar="LIST", help=f"comma list of workloads (default: {','.join(DEFAULT_WORKLOADS)}; "
                                                  f"also: {','.join(w for w in WORKLOADS if w not in DEFAULT_WORKLOADS)})")
    p.add_argument("--threads", type=int, help="torch threads for the single-model workloads (default torch's) and fused (default 1)")
    p.add_argument("--data-dir", help="data folder for the study workloads (default: $STUDY_DATA_DIR, else the cache)")
    p.add_argument("--read-sizes", metavar="SMALL,LARGE",
                   help="the read workload's two study sizes in trials (default 10,1000; --quick 5,20)")
    p.add_argument("--no-cache", action="store_true",
                   help="the read workload makes its studies afresh in a scratch folder, not kept in the user cache")
    p.set_defaults(handler=_bench)
