"""`study bench`: same-shaped models on both sides, flags, and the quick run end to end.

Nothing here times anything: the benchmark reports ratios, tests only check that it runs and says everything.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from study import bench, bench_plain, bench_study
from study.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL_WORKLOADS = [*bench.SEQUENCE_WORKLOADS, *bench.VAE_WORKLOADS]


@pytest.mark.parametrize("workload", MODEL_WORKLOADS)
def test_plain_and_ours_train_the_same_shaped_model(workload: str) -> None:
    ours, plain = bench.our_model(workload), bench.plain_model(workload)
    assert bench.n_params(ours) == bench.n_params(plain) > 0
    # ... and map the same input to outputs of the same shape
    if workload in bench.SEQUENCE_WORKLOADS:
        x = torch.zeros(3, bench.SEQ["seq_len"], 1)
        assert ours(x).shape == plain(x).shape == (3, 2)
    else:
        cfg = bench.vae_config(workload, "cpu", 1)
        x = torch.rand(2, 3, cfg.image_size, cfg.image_size)
        assert ours(x)[0].shape == plain(x)[0].shape == x.shape
        assert ours(x)[1].shape == plain(x)[1].shape == (2, cfg.latent_dim)


def test_synthetic_data_has_the_real_shapes() -> None:
    x, y = bench.synthetic_windows(100, 30)
    assert x.shape == (100, 30, 1) and x.dtype == np.float32 and np.isfinite(x).all()
    assert y.dtype == np.int64 and set(np.unique(y)) <= {0, 1} and 0 < y.mean() < 1
    images = bench.synthetic_images(5, 64)
    assert images.shape == (5, 3, 64, 64) and images.dtype == np.uint8


def test_plain_loops_and_our_fit_run_on_tiny_data() -> None:
    from trainables import sequence, vae

    x, y = bench.synthetic_windows(80, 30)
    times = bench_plain.sequence_epochs(x[:64], y[:64], x[64:], y[64:], cell="gru", hidden_size=8, num_layers=2,
                                        batch_size=16, lr=1e-3, epochs=2)
    assert len(times) == 2 and min(times) > 0
    reported: list[dict] = []
    sequence.fit(bench.sequence_config("gru", "cpu", 2), bench.sequence_data(x[:64], y[:64], x[64:], y[64:]),
                 reported.append)
    assert [m["epoch"] for m in reported] == [1, 2] and "test_acc_time" not in reported[-1]  # twin off
    images = bench.synthetic_images(40, 32)
    times = bench_plain.vae_epochs(images[:32], images[32:], arch="mlp", image_size=32, latent_dim=4, hidden=(16,),
                                   batch_size=16, lr=1e-3, epochs=1)
    assert len(times) == 1 and times[0] > 0
    cfg = bench.vae_config("vae-default", "cpu", 1)
    reported = []
    vae.fit(cfg, images[:32], images[32:], reported.append)
    assert reported[0]["epoch_time_s"] > 0 and reported[0]["eval_time_s"] >= 0


def test_study_workload_is_the_homework_presets_first_fixed_runs() -> None:
    from study.presets import PRESETS

    part = bench_study.study_part(bench.FULL, "cpu", "/data")
    assert len(part.fixed) == 16 and part.fixed == PRESETS["homework"]["covid"].fixed[:16]
    assert part.total_trials == 16 and part.scheduler == "none" and part.epochs == 10
    assert part.constants["time_twin"] is False and part.constants["batch_size"] == 64
    assert len(bench_study.study_part(bench.QUICK, "cpu", "/data").fixed) == 4


def test_format_table_with_a_skipped_study() -> None:
    row = {"workload": "gru", "what": "GRU", "unit": "s/epoch", "plain_s": 2.0, "ours_s": 1.0, "speedup": 2.0}
    result = {"quick": True, "machine": bench.machine_info("cpu"), "rows": [row],
              "skipped": [{"workload": "study", "reason": "no data"}]}
    table = bench.format_table(result)
    assert "| gru | GRU | 2.000 s/epoch | 1.000 s/epoch | 2.00x |" in table
    assert "skipped: no data" in table


@pytest.mark.parametrize("argv, message", [
    (["--only", "gru,nope"], "--only"),
    (["--threads", "0"], "--threads"),
    (["--json", "/no/such/folder/x.json"], "does not exist"),
])
def test_bad_flags_are_usage_errors(argv, message, capsys) -> None:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert "study: error:" in err and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_usage_error(capsys) -> None:
    assert main(["bench", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_bench_writes_every_row(tmp_path: Path) -> None:
    """`study bench --quick` in its own process (torch's default threads, as a user runs it); fails on errors only."""
    out = tmp_path / "bench.json"
    # study.cli.main, not `python -m study.cli`: as __main__ the module's UsageError would be a second class.
    entry = "import sys; from study.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", entry, "bench", "--quick", "--device", "cpu", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1500, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["threads"] >= 1
    rows = {r["workload"]: r for r in result["rows"]}
    skipped = {s["workload"]: s["reason"] for s in result["skipped"]}
    expected = set(bench.WORKLOADS)
    if "study" in skipped:  # only allowed without the real data
        assert not os.environ.get("STUDY_DATA_DIR"), skipped["study"]
        expected.discard("study")
    assert set(rows) == expected
    for name, r in rows.items():
        assert r["plain_s"] > 0 and r["ours_s"] > 0, name
        assert math.isfinite(r["speedup"]) and r["speedup"] > 0, name
    if "study" in rows:
        s = rows["study"]
        assert s["trials"] == 4 and s["epochs"] == 2 and s["plain_trial_epochs_per_s"] > 0
        assert s["ours_trial_epochs_per_s"] > 0 and s["overhead_pct_of_trial"] is not None
    assert "| workload |" in proc.stdout


def test_study_workload_is_skipped_with_a_reason_without_the_data(tmp_path: Path) -> None:
    lines: list[str] = []
    result = bench.run_bench(["study"], quick=True, device="cpu", data_dir=str(tmp_path), log=lines.append)
    assert result["rows"] == [] and result["skipped"][0]["workload"] == "study"
    assert "COVID data" in result["skipped"][0]["reason"] and any("skipping the study" in line for line in lines)
