"""`study bench`: same-shaped models on both sides, flags, and the quick run end to end.

Nothing here times anything: the benchmark reports ratios, tests only check that it runs and says everything.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from study.bench import cli as bench_cli
from study.bench import fused, read_workload, study_workload, timing, vae_study
from study.bench import plain as bench_plain
from study.bench import workloads as bench
from study.bench.registry import DEFAULT_WORKLOADS, WORKLOADS
from study.cli import main

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "study" / "bench"
MODEL_WORKLOADS = [*bench.SEQUENCE_WORKLOADS, *bench.VAE_WORKLOADS]


@pytest.mark.parametrize("workload", MODEL_WORKLOADS)
def test_plain_and_ours_train_the_same_shaped_model(workload: str) -> None:
    ours, plain = bench.our_model(workload), bench.plain_model(workload)
    assert timing.n_params(ours) == timing.n_params(plain) > 0
    # ... and map the same input to outputs of the same shape
    if workload in bench.SEQUENCE_WORKLOADS:
        assert ours.seeds == [0] and all(p.shape[0] == 1 for p in ours.parameters())  # one model: K = 1
        assert timing.n_params(ours) == sum(p.numel() for p in ours.parameters())
        # the same function: our model 0's weights loaded into the plain torch.nn model give the same logits
        state = {k.replace("head.", "fc."): v for k, v in ours.torch_state(0).items()}
        plain.load_state_dict(state)
        x = torch.randn(3, bench.SEQ["seq_len"], 1)
        with torch.no_grad():
            theirs, mine = plain(x), ours(x.transpose(0, 1).unsqueeze(1))  # (L, K=1, B, F)
        assert mine.shape == (1, 3, 2) and theirs.shape == (3, 2)
        torch.testing.assert_close(mine[0], theirs, rtol=1e-4, atol=1e-5)
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


def test_bench_splits_have_equal_parts_and_the_plain_loop_evaluates_both_held_out_parts() -> None:
    splits = bench.bench_splits(100, 70)
    assert set(splits) == {"random", "time"}
    for split in splits.values():
        assert [len(p) for p in split] == [70, 15, 15]
        assert sorted(np.concatenate(list(split)).tolist()) == list(range(100))  # disjoint, every window once
        assert sorted(bench.held_out(split).tolist()) == sorted([*split.val.tolist(), *split.test.tolist()])
    assert splits["time"].train.tolist() == list(range(70))  # in order
    assert splits["random"].train.tolist() != list(range(70))


def test_plain_loops_and_our_fit_run_on_tiny_data() -> None:
    from trainables import sequence, vae

    x, y = bench.synthetic_windows(80, 30)
    times = bench_plain.sequence_epochs(x[:64], y[:64], x[64:], y[64:], cell="gru", hidden_size=8, num_layers=2,
                                        batch_size=16, lr=1e-3, epochs=2)
    assert len(times) == 2 and min(times) > 0
    reported: list[dict] = []
    cfg = dataclasses.replace(bench.sequence_config("gru", "cpu", 2), hidden_size=8)
    out = sequence.fit(cfg, bench.sequence_data(x, y, bench.bench_splits(80, 64)), reported.append)
    assert [m["epoch"] for m in reported] == [1, 2] and "test_acc_time" not in reported[-1]  # twin off
    assert len(out["models"]) == 1 and out["n_train"] == 64  # one model, as the plain loop
    images = bench.synthetic_images(40, 32)
    times = bench_plain.vae_epochs(images[:32], images[32:], arch="mlp", image_size=32, latent_dim=4, hidden=(16,),
                                   batch_size=16, lr=1e-3, epochs=1)
    assert len(times) == 1 and times[0] > 0
    cfg = bench.vae_config("vae-default", "cpu", 1)
    reported = []
    vae.fit(cfg, images[:32], images[32:40], images[32:], reported.append)
    assert reported[0]["epoch_time_s"] > 0 and reported[0]["eval_time_s"] >= 0


def test_study_workload_is_the_homework_presets_first_fixed_runs() -> None:
    from study.studyfile import preset_part

    part = study_workload.study_part(timing.FULL, "cpu", "/data")
    assert len(part.fixed) == 16 and part.fixed == preset_part("homework", "covid").fixed[:16]
    assert part.total_trials == 16 and part.scheduler == "none" and part.epochs == 10
    assert part.constants["time_twin"] is False and part.constants["seeds"] == 1  # one model, as each plain loop
    assert part.constants["batch_size"] == 64
    assert len(study_workload.study_part(timing.QUICK, "cpu", "/data").fixed) == 4


def test_vae_study_workload_is_the_homework_presets_vae_part_on_fewer_faces() -> None:
    from study.studyfile import preset_part

    base = preset_part("homework", "vae")
    part = vae_study.vae_study_part(timing.FULL, "cpu", "/data")
    assert part.fixed[:3] == base.fixed and part.fixed[3] == dict(base.fixed[0], seed=1)
    assert part.total_trials == 4 and part.scheduler == "none" and part.epochs == timing.FULL.vae_study_epochs
    assert part.constants["max_images"] == timing.FULL.vae_study_images
    assert part.constants["image_size"] == base.constants["image_size"]
    assert part.constants["iw_samples"] == base.constants["iw_samples"]
    assert len(vae_study.vae_study_part(timing.QUICK, "cpu", "/data").fixed) == timing.QUICK.vae_study_trials


def test_plain_conv_vae_has_the_shape_of_the_presets_conv_vae() -> None:
    from trainables.vae_models import build_vae

    ours, plain = build_vae("conv", 32, 32), bench_plain.plain_vae("conv", 32, 32, (32, 64))
    assert timing.n_params(ours) == timing.n_params(plain) > 0
    x = torch.rand(2, 3, 32, 32)
    assert ours(x)[0].shape == plain(x)[0].shape == x.shape


def _bench_imports(path: Path) -> set[str]:
    """The study.bench modules a module imports, at any level (module top or inside functions)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "study.bench":
                found |= {f"study.bench.{a.name}" for a in node.names}
            elif node.module.startswith("study.bench."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("study.bench.")}
    return found


def test_bench_modules_import_one_way() -> None:
    """No cycle among study/bench/*.py, counting imports inside functions too; each module imports on its own."""
    import graphlib
    import importlib

    modules = {f"study.bench.{p.stem}": p for p in BENCH_DIR.glob("*.py") if p.stem != "__init__"}
    graph = {name: _bench_imports(path) - {name} for name, path in modules.items()}
    assert all(dep in modules for deps in graph.values() for dep in deps), graph
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert set(order) == set(modules)
    assert graph["study.bench.plain"] == set()  # the baseline stands alone
    for name in modules:
        importlib.import_module(name)


def test_the_registry_runs_every_workload_the_command_offers() -> None:
    assert list(WORKLOADS) == [*bench.SEQUENCE_WORKLOADS, *bench.VAE_WORKLOADS, "fused", "study", "vae-study", "read"]
    assert all(w.name == name and callable(w.run) for name, w in WORKLOADS.items())
    # reading studies is only run when asked for: its first run makes a 1,000-trial study
    assert DEFAULT_WORKLOADS == [w for w in WORKLOADS if w != "read"]
    assert bench_cli._parse_only(None) == DEFAULT_WORKLOADS and bench_cli._parse_only("read") == ["read"]


def test_fused_workload_is_what_a_homework_covid_trial_trains() -> None:
    from study.studyfile import preset_part
    from trainables import sequence

    base = preset_part("homework", "covid").constants
    cfg = fused.fused_config("cpu", 3, 1)
    assert (cfg.cell, cfg.hidden_size, cfg.num_layers, cfg.data.seq_len, cfg.batch_size) == ("gru", 32, 1, 30, 64)
    assert cfg.seeds == base["seeds"] == 3 and cfg.time_twin and cfg.batch_size == base["batch_size"]
    assert fused.K == 6
    assert timing.FULL.fused_windows == 11_193 and timing.QUICK.fused_windows < timing.FULL.fused_windows
    # the plain runs are the trainable's models, in its order: 3 seeds on the random split, then on the time split
    data = fused.fused_data(200)
    stacks = sequence.build_stacks(cfg, data, torch.device("cpu"))
    ours = [("random" if g == "main" else "time", s) for st in stacks for g, s in zip(st.group, st.seeds)]
    assert fused.plain_models(cfg) == ours and len(ours) == 6
    assert [len(p) for p in data.splits["random"]] == [len(p) for p in data.splits["time"]] == [140, 30, 30]


def test_fused_row_trains_six_models_at_once_against_six_plain_runs(monkeypatch, tmp_path: Path) -> None:
    calls: list[tuple[int, int, int]] = []
    real = bench_plain.sequence_epochs

    def counted(x_train, y_train, x_test, y_test, **kw):
        calls.append((len(x_train), len(x_test), kw["seed"]))
        assert kw["hidden_size"] == 32 and kw["batch_size"] == 64 and kw["cell"] == "gru"
        return real(x_train, y_train, x_test, y_test, **kw)

    monkeypatch.setattr(bench_plain, "sequence_epochs", counted)
    threads = torch.get_num_threads()
    sizes = timing.Sizes(fused_windows=200, warmup=1, timed=1, rounds=1)
    row = fused.bench_fused(timing.BenchRun(sizes, "cpu", None, tmp_path))
    assert torch.get_num_threads() == threads  # put back
    assert calls == [(140, 60, s) for s in (0, 1, 2)] * 2  # 3 seeds x (random, time): train, val + test
    assert row["workload"] == "fused" and row["unit"] == "s/model-epoch"
    assert row["k_models"] == 6 and row["ours_models"] == [6] and row["plain_runs"] == [6]
    assert row["seeds"] == 3 and row["time_twin"] is True and row["threads"] == 1
    assert (row["n_train"], row["n_val"], row["n_test"]) == (140, 30, 30) and row["n_params_per_model"] > 0
    assert len(row["plain_epochs_s"]) == 1 and [len(t) for t in row["plain_epochs_s"][0]] == [2] * 6
    assert [len(t) for t in row["ours_epochs_s"]] == [2]
    for key in ("plain_s", "ours_s", "speedup", "plain_model_epochs_per_s", "ours_model_epochs_per_s"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["ours_s"] == pytest.approx(row["ours_epoch_s"] / 6)
    assert row["speedup"] == pytest.approx(row["ours_model_epochs_per_s"] / row["plain_model_epochs_per_s"])
    assert row["what"].startswith("K=6 GRUs 1x32")
    table = bench_cli.format_table({"quick": False, "machine": bench_cli.machine_info("cpu"), "rows": [row],
                                    "skipped": []})
    assert f"| fused | {row['what']} | {row['plain_model_epochs_per_s']:.2f} model-epochs/s |" in table
    assert "trains K=6 models at once" in table and "L=30, batch 64" in table


def test_format_table_with_a_skipped_study() -> None:
    row = {"workload": "gru", "what": "GRU", "unit": "s/epoch", "plain_s": 2.0, "ours_s": 1.0, "speedup": 2.0}
    result = {"quick": True, "machine": bench_cli.machine_info("cpu"), "rows": [row],
              "skipped": [{"workload": "study", "reason": "no data"}]}
    table = bench_cli.format_table(result)
    assert "| gru | GRU | 2.000 s/epoch | 1.000 s/epoch | 2.00x |" in table
    assert "skipped: no data" in table


@pytest.mark.parametrize("argv, message", [
    (["--only", "gru,nope"], "--only"),
    (["--threads", "0"], "--threads"),
    (["--json", "/no/such/folder/x.json"], "does not exist"),
    (["--only", "read", "--read-sizes", "1000,10"], "smaller first"),
    (["--only", "read", "--read-sizes", "10"], "two trial counts"),
    (["--only", "read", "--read-sizes", "0,10"], "two trial counts"),
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
    expected = set(DEFAULT_WORKLOADS)
    for name in ("study", "vae-study"):
        if name in skipped:  # only allowed without the real data
            assert not os.environ.get("STUDY_DATA_DIR"), skipped[name]
            expected.discard(name)
    assert set(rows) == expected
    for name, r in rows.items():
        assert r["plain_s"] > 0 and r["ours_s"] > 0, name
        assert math.isfinite(r["speedup"]) and r["speedup"] > 0, name
    if "study" in rows:
        s = rows["study"]
        assert s["trials"] == 4 and s["epochs"] == 2 and s["plain_trial_epochs_per_s"] > 0
        assert s["ours_trial_epochs_per_s"] > 0 and s["overhead_pct_of_trial"] is not None
    f = rows["fused"]
    assert f["k_models"] == 6 and f["ours_models"] == [6, 6] and f["plain_runs"] == [6, 6]
    assert f["n_train"] == int(0.7 * timing.QUICK.fused_windows) and "Fused: one trial" in proc.stdout
    if "vae-study" in rows:
        v = rows["vae-study"]
        assert v["trials"] == timing.QUICK.vae_study_trials and v["epochs"] == timing.QUICK.vae_study_epochs
        assert v["plain_trial_epochs_per_s"] > 0 and v["ours_trial_epochs_per_s"] > 0
        assert v["ours_train_total_s"] > 0 and math.isfinite(v["overhead_pct_of_training"])
        assert v["iw_samples"] == 64 and 0 < v["iw_images"] <= v["n_test"] and v["iw_time_s"] > 0
        assert "VAE study:" in proc.stdout
    assert "| workload |" in proc.stdout


def test_study_workloads_are_skipped_with_a_reason_without_the_data(tmp_path: Path) -> None:
    lines: list[str] = []
    result = bench_cli.run_bench(["study", "vae-study"], quick=True, device="cpu", data_dir=str(tmp_path),
                                 log=lines.append)
    assert result["rows"] == [] and [s["workload"] for s in result["skipped"]] == ["study", "vae-study"]
    assert "COVID data" in result["skipped"][0]["reason"] and any("skipping the study" in line for line in lines)
    assert "faces" in result["skipped"][1]["reason"] and any("skipping the vae-study" in line for line in lines)
    assert "| vae-study | skipped: the real faces" in bench_cli.format_table(result)


def test_read_workload_commands_and_its_table(tmp_path: Path) -> None:
    """The four read commands a user types, and a table of each one's time at both sizes with larger / smaller."""
    argv = read_workload.commands(tmp_path / "studies" / "read-10", tmp_path / "out")
    assert list(argv) == ["study show", "study export", "open_study(...).trials", "study report"]
    assert argv["study show"][1:] == ["-m", "study", "show", str(tmp_path / "studies" / "read-10")]
    assert argv["study export"][-2:] == ["--to", str(tmp_path / "out" / "export")]
    assert argv["study report"][-6:] == ["--storage", str(tmp_path / "studies"), "--name", "read-10",
                                         "--out", str(tmp_path / "out" / "report")]
    assert "open_study(" in argv["open_study(...).trials"][-1]
    made = {"trials": 10, "build_s": 12.0, "made_at": "2026-01-01 00:00:00"}
    row = {"workload": "read", "sizes": [10, 1000], "repeats": 3, "cached": True,
           "median_s": {"study show": {"10": 1.0, "1000": 1.5}, "study report": {"10": 4.0, "1000": 12.0}},
           "ratio": {"study show": 1.5, "study report": 3.0}, "yardstick": read_workload.YARDSTICK, "yardstick_s": 0.5,
           "studies": {"10": {"path": "/c/read-10", "reused": True, **made},
                       "1000": {"path": "/c/read-1000", "reused": False, **made, "trials": 1000}}}
    lines = read_workload.read_note(row, False)
    assert "| command | 10 trials | 1,000 trials | 1,000 / 10 |" in lines
    assert "| study show | 1.00 s | 1.50 s | 1.50x |" in lines and "| study report | 4.00 s | 12.00 s | 3.00x |" in lines
    assert any(line.startswith('| python -c "import pandas"') and "0.50 s" in line for line in lines)
    assert any("/c/read-10, reused from the cache" in line for line in lines)
    assert any("/c/read-1000, made now in 12 s, kept in the cache" in line for line in lines)
    table = bench_cli.format_table({"quick": False, "machine": bench_cli.machine_info("cpu"), "rows": [row],
                                    "skipped": []})
    assert "| workload |" not in table and "| study show | 1.00 s |" in table  # no empty training table


def test_read_workload_cache_key_follows_the_code_that_writes_a_study() -> None:
    key = read_workload.code_key()
    assert key == read_workload.code_key() and len(key) == 12
    assert read_workload.cache_root().name == key and read_workload.cache_root().parent.name == "bench-read"
    assert all((read_workload.ROOT / f).is_file() for f in read_workload.READ_ONLY)  # names that still exist


@pytest.mark.slow
def test_read_workload_makes_and_reads_two_tiny_studies(tmp_path: Path) -> None:
    """Two studies through the real `study run` (3 and 6 trials), every read command on each, in a scratch folder."""
    sizes = dataclasses.replace(timing.QUICK, read_trials=(3, 6), read_repeats=1)
    row = read_workload.bench_read(timing.BenchRun(sizes, "cpu", None, tmp_path, cache=False))
    assert row["sizes"] == [3, 6] and not row["cached"]
    assert set(row["median_s"]) == {"study show", "study export", "open_study(...).trials", "study report"}
    for name, by_n in row["times_s"].items():
        assert set(by_n) == {"3", "6"} and all(len(t) == 1 and t[0] > 0 for t in by_n.values()), name
        assert math.isfinite(row["ratio"][name]) and row["ratio"][name] > 0
    assert row["yardstick_s"] > 0 and len(row["yardstick_runs_s"]) == 2
    for n, s in row["studies"].items():
        assert not s["reused"] and s["trials"] == int(n) and Path(s["path"]).parent == tmp_path / "read"
        summary = json.loads((Path(s["path"]) / "summary.json").read_text())[-1]
        assert summary["trials"] == int(n) and summary["errored"] == 0
    again = read_workload.make_study(tmp_path / "read", 3, log=lambda _: None)  # complete: not made again
    assert again["reused"] and again["build_s"] == row["studies"]["3"]["build_s"]
