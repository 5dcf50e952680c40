"""Workload `vae-study` of `study bench`: VAE trials through the project's runner against the same plain loops.

The homework preset's VAE part (conv VAE, 32x32, batch 128, k=64 importance-weighted estimate at the end) on the
first `vae_study_images` real faces, its three fixed runs (KL weight 1, 100, 0) plus the first again with seed 1,
so that each of the 2 CPU slots runs two trials. The plain side trains the same models on the same splits the
homework's way (`study.bench.plain.vae_epochs`), one after another; it has no end-of-run results or artefacts,
which is what the overhead measures on our side. Overhead is defined as for the covid study
(`study.bench.study_workload`), with a VAE epoch = its training pass + its held-out pass, and it is given both
as a % of a trial's time and as a % of the trial's training passes alone.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from study.bench.study_workload import plain_side, runner_side, study_row, trial_runs
from study.bench.timing import BenchRun, Sizes
from study.bench.workloads import vae_hidden


def vae_study_part(sizes: Sizes, device: str, data_dir: str):
    """The homework preset's VAE part on fewer faces and epochs: its fixed runs (+ the first with seed 1)."""
    from study.studyfile import preset_part

    base = preset_part("homework", "vae")
    fixed = [dict(r) for r in base.fixed] + [dict(base.fixed[0], seed=1)]
    constants = dict(base.constants, epochs=sizes.vae_study_epochs, max_images=sizes.vae_study_images,
                     device=device, data_dir=data_dir)
    return dataclasses.replace(base, constants=constants, fixed=fixed[:sizes.vae_study_trials], num_samples=0,
                               scheduler="none")


def vae_study_missing(data_dir: str | None) -> str | None:
    from data.errors import DataError
    from data.location import faces_source, resolve_data_dir

    try:
        faces_source(resolve_data_dir(data_dir))
    except DataError as err:
        return f"the real faces are needed for the vae-study workload: {err}"
    return None


def _end_of_run(study_dir, runs) -> list[dict[str, Any]]:
    """Each trial's summary.json (its end-of-run results, with the importance-weighted estimate's settings)."""
    from mlflow.tracking import MlflowClient

    from study.tracking import default_uri

    client = MlflowClient(default_uri(study_dir))
    out = []
    for r in runs:
        dst = study_dir / "summaries" / r.info.run_id
        dst.mkdir(parents=True, exist_ok=True)
        path = client.download_artifacts(r.info.run_id, "results/summary.json", str(dst))
        out.append(json.loads(Path(path).read_text()))
    return out


def bench_vae_study(run: BenchRun) -> dict:
    """A few homework VAE trials through `run_study` (Ray + MLflow) against the same plain loops in a row."""
    import torch

    from data.faces import load_faces, split_indices
    from data.location import faces_source, resolve_data_dir
    from study.bench import plain as bench_plain
    from trainables.vae import VAEConfig

    data_dir = str(resolve_data_dir(run.data_dir).resolve())
    part = vae_study_part(run.sizes, run.device, data_dir)
    c = part.constants

    # (a) the plain loops, one after another, on the same faces and splits (loading is not timed here).
    faces = load_faces(faces_source(resolve_data_dir(data_dir)), size=int(c["image_size"]), progress=False,
                       max_images=c["max_images"])
    images = faces.images[: c["max_images"]]
    plain_epochs: list[list[float]] = []
    for r in part.fixed:
        cfg = VAEConfig.from_dict({**c, **r})
        train_idx, test_idx = split_indices(len(images), test_frac=cfg.test_frac, seed=cfg.seed)
        plain_epochs.append(bench_plain.vae_epochs(
            images[train_idx], images[test_idx], arch=cfg.arch, image_size=cfg.image_size,
            latent_dim=cfg.latent_dim, hidden=vae_hidden(cfg), batch_size=cfg.batch_size, lr=cfg.lr, epochs=cfg.epochs,
            kl_weight=cfg.kl_weight, device=run.device, seed=cfg.seed))
    plain = plain_side(plain_epochs, torch.get_num_threads())
    what = (f"{len(part.fixed)} homework VAE trials ({cfg.arch}, {cfg.image_size}x{cfg.image_size}) x "
            f"{part.epochs} epochs, {len(images):,} real faces, batch {cfg.batch_size}")

    # (b) the project's runner: Ray Tune trials at 1 CPU each, MLflow tracking, checkpoints, end-of-run results.
    name = "bench-vae-study"
    ours = runner_side(part, run, name, lambda r: r["epoch_time_s"] + r["eval_time_s"])
    trials = ours["trials"]
    train_s = sum(r["epoch_time_s"] for rs in ours["results"].values() for r in rs)
    summaries = _end_of_run(run.workdir / name, trial_runs(run.workdir / name))
    iw_times = [s["iw_time_s"] for s in summaries if "iw_time_s" in s]
    ours.update(
        ours_train_total_s=train_s, ours_eval_total_s=ours["ours_epochs_total_s"] - train_s,
        overhead_pct_of_training=100.0 * ours["overhead_per_trial_s"] / (train_s / trials),
        overhead_marginal_pct_of_training=100.0 * ours["overhead_marginal_per_trial_s"] / (train_s / trials),
        iw_samples=summaries[0].get("iw_samples") if summaries else None,
        iw_images=summaries[0].get("iw_images") if summaries else None,
        iw_time_s=statistics.mean(iw_times) if iw_times else None,
        n_train=summaries[0].get("n_train") if summaries else None,
        n_test=summaries[0].get("n_test") if summaries else None,
    )
    return study_row("vae-study", what, plain, ours)


def vae_study_note(row: dict[str, Any], quick: bool) -> list[str]:
    """The lines under the table for the VAE study: where a trial's time goes besides its epochs."""
    per_trial_train = row["ours_train_total_s"] / row["trials"]
    per_trial_eval = row["ours_eval_total_s"] / row["trials"]
    iw = (f"{row['iw_time_s']:.2f} s of it the importance-weighted estimate (k={row['iw_samples']}, "
          f"{row['iw_images']} of {row['n_test']} test images)" if row.get("iw_time_s") is not None
          else "the importance-weighted estimate's time not recorded")
    end = row["overhead_end_of_run_s"]
    lines = ["", f"VAE study: {row['concurrent_trials']} trials at once, {row['cpus_per_trial']:g} CPU each; a trial "
                 f"trains {per_trial_train:.2f} s (training passes) + {per_trial_eval:.2f} s (held-out pass each "
                 f"epoch). Ray + MLflow overhead {row['overhead_per_trial_s']:.2f} s per trial = "
                 f"{row['overhead_pct_of_training']:.1f}% of its training time: "
                 f"{row['overhead_trial_start_s']:.2f} s at the start, "
                 f"{row['overhead_per_report_s'] * 1000:.0f} ms per epoch report, "
                 + (f"{end:.2f} s at the end ({iw}, artefacts, closing the run), " if end is not None else "")
                 + f"{row['overhead_between_trials_s']:.2f} s between trials. Of that, {row['study_startup_s']:.1f} s "
                 f"is paid once per study (worker start-up); the marginal cost of one more trial is "
                 f"{row['overhead_marginal_per_trial_s']:.2f} s = {row['overhead_marginal_pct_of_training']:.1f}% "
                 "of its training time."]
    if quick:
        lines.append(f"(--quick: {row['trials']} short trials x {row['epochs']} epochs; the full run is the one to read.)")
    return lines
