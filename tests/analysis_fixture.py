"""A real MLflow sqlite store in the study layout, filled with plausible synthetic runs.

This is test INPUT for analysis/ (what study/ would have written), built with the ordinary MLflow client:
a parent run, fixed-design child runs (three cells x several L, seeds inside each, a normalisation ablation, three KL
weights), Optuna-style search trials, one FAILED trial and the baseline runs of every L. Knobs let a test change the numbers.
`add_toy_part` adds a plugin part (trainable "toy", which analysis cannot import) as study/ writes any part, with
its Optuna study; `build_toy_store` is a study folder of toy parts only.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainables.names import GROUP_ATTR, OPTUNA_DB, PART_TAG, RAY_TRIAL_ATTR, SPACE_TAG, STUDY_STATE, TRIAL_TAG

COUNTRIES = {
    "US": "us", "Brazil": "br", "India": "in", "France": "fr", "Germany": "de", "Italy": "it", "Spain": "es",
    "Japan": "jp", "Korea, South": "kr", "Australia": "au", "Canada": "ca", "Mexico": "mx", "Russia": "ru",
    "China": "cn", "South Africa": "za", "Egypt": "eg", "Algeria": "dz", "Argentina": "ar", "Chile": "cl",
    "Peru": "pe", "Norway": "no", "Sweden": "se", "Poland": "pl", "Turkey": "tr", "Iran": "ir",
    "Indonesia": "id", "Nigeria": "ng", "Kenya": "ke", "United Kingdom": "gb", "Diamond Princess": None,
}
SET_C = ["Algeria", "Brazil", "France", "Germany", "India", "Italy", "Spain", "US"]
CELL_BASE = {"rnn": 0.70, "lstm": 0.78, "gru": 0.80}
CELL_EPOCH_S = {"rnn": 0.4, "lstm": 0.9, "gru": 0.7}
MAJORITY = {"random": 0.60, "time": 0.55}
# Test accuracy of each baseline on the random split (the time split scores 0.05 lower), as study.baselines logs them.
BASELINES = {"majority": 0.60, "weekly": 0.66, "logistic": 0.71, "boosted_trees": 0.74}


@dataclass
class FixtureKnobs:
    """What a test may change: best L per cell, random-vs-time gap, KL results."""

    best_L: dict[str, int] = field(default_factory=lambda: {"rnn": 10, "lstm": 30, "gru": 20})
    time_gap: float = 0.06
    seq_lens: tuple[int, ...] = (10, 20, 30)
    seeds: int = 2
    epochs: int = 8
    search_trials: int = 8
    vae_search_trials: int = 6
    image_size: int = 16
    kl100_recon: float = 520.0  # nats/image of the KL x100 model's reconstruction
    kl0_samples: str = "noise"  # what the KL x0 model's prior samples look like: "noise" | "faces"
    extra_country: str | None = None  # one more country (no ISO code) in every prediction and in set C
    baseline_shift: float = 0.0  # added to every baseline's accuracy
    split: str = "random"  # the trials' split; "time": no twin, the main models are the leakage-free ones
    second_gru_20: bool = False  # one more fixed GRU at L=20 (hidden 64), worse on validation, far worse on test
    toy_trials: int = 0  # > 0: a plugin part "toy" beside covid and vae (add_toy_part)


def _metric_batch(history: dict[str, list[float]], t0: int):
    from mlflow.entities import Metric

    out = []
    for key, values in history.items():
        for epoch, v in enumerate(values, start=1):
            out.append(Metric(key, float(v), t0 + epoch * 1000, epoch))
    return out


def _log_run(client, exp_id, parent_id, name, tags, params, history, files, t0, status="FINISHED"):
    from mlflow.entities import Param

    all_tags = {"mlflow.parentRunId": parent_id, "git_commit": "0123abc", "data_hash": "feedbeef00112233", **tags}
    run = client.create_run(exp_id, start_time=t0, tags=all_tags, run_name=name)
    rid = run.info.run_id
    metrics = _metric_batch(history, t0)
    params_l = [Param(k, v if isinstance(v, str) else json.dumps(v)) for k, v in params.items()]  # as study.tracking
    for i in range(0, len(metrics), 900):
        client.log_batch(rid, metrics=metrics[i : i + 900], params=params_l if i == 0 else [], tags=[])
    if files:
        with tempfile.TemporaryDirectory() as tmp:
            for fname, content in files.items():
                p = Path(tmp) / fname
                if isinstance(content, bytes):
                    p.write_bytes(content)
                elif callable(content):
                    content(p)
                else:
                    p.write_text(json.dumps(content))
            client.log_artifacts(rid, tmp, "results")
    client.set_terminated(rid, status, end_time=t0 + 100_000)
    return rid


def _seq_history(final: float, gap: float, epochs: int, cell: str, rng) -> dict[str, list[float]]:
    """Per-epoch means over the seeds inside the trial, with their spread (`*_std`), as trainables.sequence reports."""
    e = np.arange(1, epochs + 1)
    rise = 1 - np.exp(-e / (1.5 if cell == "gru" else 2.5))
    test_acc = 0.5 + (final - 0.5) * rise + rng.normal(0, 0.004, epochs)
    val_acc = test_acc + 0.005 + rng.normal(0, 0.002, epochs)
    train_acc = test_acc + 0.02 * rise
    std = list(0.004 + 0.004 * rng.random(epochs))
    return {
        "train_loss": list(0.69 * np.exp(-e / 4) + 1.2 * (1 - final)),
        "train_acc": list(train_acc),
        "val_acc": list(val_acc), "val_acc_std": std,
        "test_loss": list(0.69 * np.exp(-e / 4) + 1.3 * (1 - final)),
        "test_acc": list(test_acc), "test_acc_std": std,
        "val_acc_time": list(val_acc - gap * rise), "val_acc_time_std": std,
        "test_acc_time": list(test_acc - gap * rise), "test_acc_time_std": std,
        "epoch_time_s": list(CELL_EPOCH_S[cell] + rng.normal(0, 0.02, epochs).clip(-0.1, 0.1)),
    }


def _seq_params(cell, L, seeds, norm="log1p", split="random", **over):
    p = {
        "cell": cell, "hidden_size": 32, "num_layers": 2, "seq_len": L, "norm": norm, "split": split,
        "selection": "any-pair", "threshold": 0.7, "reference": "Algeria", "min_partners": 40,
        "label": "next-higher", "date_range": "full", "lr": 0.001, "batch_size": 128, "epochs": 8,
        "seed": 0, "seeds": seeds, "data_dir": None, "train_frac": 0.7, "val_frac": 0.15, "dropout": 0.0,
        "features": "counts",
    }
    p.update(over)
    return p


def _seq_files(acc: float, rng, date="2023-03-10", extra_country: str | None = None):
    n = 1000
    tp = int(n / 2 * acc)
    tn = int(n / 2 * acc)
    countries = dict(COUNTRIES, **({extra_country: None} if extra_country else {}))
    preds = {
        name: {"iso2": iso, "p_increase": float(rng.uniform(0.05, 0.95))} for name, iso in countries.items()
    }
    set_c = SET_C + ([extra_country] if extra_country else [])
    return {
        "summary.json": {"test_acc": acc, "n_countries_c": len(set_c), "countries_c": set_c, "prediction_date": date,
                         "n_train": 3000, "n_val": 600, "n_test": 1000, "majority_rate": MAJORITY["random"],
                         "majority_rate_time": MAJORITY["time"], "constant_models": 0},
        "confusion.json": {"labels": ["no increase", "increase"], "matrix": [[tn, n // 2 - tn], [n // 2 - tp, tp]]},
        "predictions.json": {"date": date, "countries": preds},
    }


def _blobs(rng, n, s):
    low = rng.uniform(0, 255, (n, 3, 4, 4))
    img = np.kron(low, np.ones((1, 1, s // 4, s // 4)))
    return img


def _faces(rng, n, s):
    """Face-like test images: one shared, left-right symmetric layout (a light centre, darker surround) plus
    per-image symmetric colour blobs, as real centred face crops share a layout and differ in colours."""
    yy, xx = np.mgrid[0:s, 0:s] / (s - 1) - 0.5
    layout = 200 - 260 * (xx ** 2 + yy ** 2)
    blobs = _blobs(rng, n, s)
    blobs = (blobs + blobs[..., ::-1]) / 2
    return 0.6 * layout[None, None] + 0.4 * blobs


def _vae_images(kl: float, rng, s: int, kl0_samples: str = "noise"):
    real = _faces(rng, 8, s)
    if kl >= 50:  # posterior collapse: every reconstruction and sample is near the data mean
        recon = np.broadcast_to(real.mean(0, keepdims=True), real.shape) + rng.normal(0, 3, real.shape)
        samples = np.broadcast_to(real.mean(0, keepdims=True), (16, 3, s, s)) + rng.normal(0, 3, (16, 3, s, s))
    elif kl == 0:  # sharp reconstructions; prior samples off-manifold noise (or, by knob, faces)
        recon = real + rng.normal(0, 5, real.shape)
        samples = _faces(rng, 16, s) if kl0_samples == "faces" else rng.uniform(0, 255, (16, 3, s, s))
    else:
        recon = 0.7 * real + 0.3 * real.mean() + rng.normal(0, 8, real.shape)
        samples = _faces(rng, 16, s) * 0.8 + 20
    t = np.linspace(0, 1, 10)[:, None, None, None]
    interp = (1 - t) * real[0] + t * real[1]
    interp[0], interp[-1] = real[0], real[1]
    u8 = lambda a: np.clip(a, 0, 255).astype(np.uint8)  # noqa: E731

    def write(path: Path) -> None:
        np.savez(path, real=u8(real), recon=u8(recon), samples=u8(samples), interp=u8(interp))

    return write


def _vae_history(kl: float, epochs: int, knobs: FixtureKnobs, scale: float = 1.0) -> tuple[dict, dict]:
    e = np.arange(1, epochs + 1)
    d = 3 * knobs.image_size**2
    if kl >= 50:
        recon, klv = knobs.kl100_recon + 60 * np.exp(-e / 2), 0.3 + 0.5 * np.exp(-e)
    elif kl == 0:
        recon, klv = 240 + 200 * np.exp(-e / 2), 150 + 30 * e
    else:
        recon, klv = 320 + 180 * np.exp(-e / 2), 28 - 8 * np.exp(-e / 2)
    recon, klv = recon * scale, klv * (2 - scale)
    neg = recon + klv
    h = {
        "train_loss": list(recon * 0.97 + kl * klv), "train_neg_elbo": list(neg * 0.97),
        "test_neg_elbo": list(neg), "test_bits_per_dim": list(neg / (d * math.log(2))),
        "test_recon": list(recon), "test_kl": list(klv), "epoch_time_s": [2.0] * epochs,
    }
    # The end-of-run importance-weighted estimate, as trainables.vae writes it into summary.json (not a metric).
    iw_neg_elbo = float(neg[-1] * 1.001)
    return h, {"test_iw_nll": float(neg[-1] * 0.98), "test_iw_neg_elbo": iw_neg_elbo,
               "test_iw_bits_per_dim": float(neg[-1] * 0.98 / (d * math.log(2))), "iw_samples": 64, "n_test": 200}


def _space_tag(metric: str, mode: str, **space) -> str:
    """A part's space as study/ logs it: {name: Optuna distribution JSON}, metric and mode."""
    from optuna.distributions import distribution_to_json

    return json.dumps({"space": {k: distribution_to_json(d) for k, d in space.items()}, "metric": metric, "mode": mode})


def space_tags() -> dict[str, str]:
    """The search spaces, logged on the parent run as study/ does (fixed runs lie inside them too)."""
    from optuna.distributions import CategoricalDistribution as Cat, FloatDistribution, IntDistribution

    return {
        SPACE_TAG + "covid": _space_tag(
            "val_acc", "max", cell=Cat(["rnn", "lstm", "gru"]), seq_len=IntDistribution(1, 40),
            hidden_size=Cat([16, 32, 64]), lr=FloatDistribution(1e-5, 1e-1, log=True), norm=Cat(["none", "log1p"])),
        SPACE_TAG + "vae": _space_tag(
            "test_neg_elbo", "min", kl_weight=Cat([0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]),
            latent_dim=Cat([8, 16, 32]), lr=FloatDistribution(1e-5, 1e-1, log=True)),
    }


# The data-setting params a baseline run carries (study.baselines.setting_of), matched against a trial's.
BASELINE_SETTING = ("date_range", "revisions", "selection", "threshold", "reference", "min_partners", "seq_len",
                    "label", "norm", "features", "split", "train_frac", "val_frac", "seed")


def _vae_params(kl, seed=0, **over):
    p = {"arch": "conv", "kl_weight": kl, "latent_dim": 32, "image_size": 16, "lr": 0.001, "batch_size": 64,
         "epochs": 8, "seed": seed, "channels": 32, "max_images": 2000, "test_frac": 0.1, "data_dir": None}
    p.update(over)
    return p


def build_store(root: Path, name: str = "homework-test", knobs: FixtureKnobs | None = None) -> str:
    """Write the store under root and return its tracking URI."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    knobs = knobs or FixtureKnobs()
    rng = np.random.default_rng(0)
    uri = f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(name, artifact_location=(Path(root) / "artifacts").resolve().as_uri())
    t = int(time.time() * 1000) - 10_000_000
    parent = client.create_run(exp_id, start_time=t, run_name="study",
                               tags={"study.kind": "homework", "study.preset": "smoke", "study.storage": str(root),
                                     **space_tags()})
    pid = parent.info.run_id
    t += 1
    for cell, base in CELL_BASE.items():
        for L in knobs.seq_lens:  # one trial per (cell, L): its seeds are trained inside it
            final = base + (0.05 if L == knobs.best_L[cell] else 0.0) + rng.normal(0, 0.005)
            t += 200_000
            _log_run(client, exp_id, pid, f"fixed_{cell}_L{L}", {"trainable": "covid", "group": "fixed"},
                     _seq_params(cell, L, knobs.seeds, split=knobs.split), _seq_history(final, knobs.time_gap, knobs.epochs, cell, rng),
                     _seq_files(final, rng, extra_country=knobs.extra_country), t)
    if knobs.second_gru_20:
        t += 200_000
        history = _seq_history(0.56, knobs.time_gap, knobs.epochs, "gru", rng)
        _log_run(client, exp_id, pid, "fixed_gru_L20_h64", {"trainable": "covid", "group": "fixed"},
                 _seq_params("gru", 20, knobs.seeds, hidden_size=64, split=knobs.split), history,
                 _seq_files(0.56, rng, extra_country=knobs.extra_country), t)
    for norm in ("none",):  # the ablation: without normalisation (log1p runs above are "with")
        t += 200_000
        final = CELL_BASE["gru"] - 0.08 + rng.normal(0, 0.005)
        _log_run(client, exp_id, pid, f"norm_{norm}", {"trainable": "covid", "group": "fixed"},
                 _seq_params("gru", 20, knobs.seeds, norm=norm, split=knobs.split), _seq_history(final, knobs.time_gap, knobs.epochs, "gru", rng),
                 _seq_files(final, rng, extra_country=knobs.extra_country), t)
    for i in range(knobs.search_trials):
        cell = ["rnn", "lstm", "gru"][i % 3]
        lr = float(10 ** rng.uniform(-4, -2))
        hidden = int(rng.choice([16, 32, 64]))
        features = ["counts", "relative+weekday"][i % 2]
        final = (CELL_BASE[cell] + 0.04 * (1 - abs(math.log10(lr) + 3)) + hidden / 3000 + rng.normal(0, 0.01)
                 + (0.02 if features != "counts" else 0.0))
        t += 200_000
        _log_run(client, exp_id, pid, f"search_{i:03d}", {"trainable": "covid", "group": "search"},
                 _seq_params(cell, 20, knobs.seeds, lr=lr, hidden_size=hidden, features=features, split=knobs.split),
                 _seq_history(final, knobs.time_gap, knobs.epochs, cell, rng),
                 _seq_files(final, rng, extra_country=knobs.extra_country), t)
    for L in sorted({*knobs.seq_lens, 20}):  # the baselines of every L the trials trained on, both splits
        setting = {k: v for k, v in _seq_params("gru", L, 1).items() if k in BASELINE_SETTING}
        for split in ("random", "time"):
            for name, acc in BASELINES.items():
                acc = acc + knobs.baseline_shift - (0.05 if split == "time" else 0.0)
                t += 1_000
                run = client.create_run(exp_id, start_time=t, run_name=f"{name} {split} L={L}", tags={
                    "mlflow.parentRunId": pid, "study.baseline": name, "trainable": "baseline", "split": split})
                params = {**setting, "trained_split": "random", "split": split, "baseline": name}
                client.log_batch(run.info.run_id, params=[Param(k, v if isinstance(v, str) else json.dumps(v))
                                                          for k, v in params.items()],
                                 metrics=[Metric(k, v, t, 0) for k, v in
                                          {"train_acc": acc + 0.01, "val_acc": acc + 0.002, "test_acc": acc}.items()])
                client.set_terminated(run.info.run_id, "FINISHED", end_time=t + 500)
    t += 200_000
    _log_run(client, exp_id, pid, "search_failed", {"trainable": "covid", "group": "search", "error": "NonFiniteLossError"},
             _seq_params("rnn", 20, 0, lr=0.5), {"train_loss": [0.7]}, None, t, status="FAILED")
    for kl in (1.0, 100.0, 0.0):
        h, extra = _vae_history(kl, knobs.epochs, knobs)
        t += 200_000
        _log_run(client, exp_id, pid, f"vae_kl{kl}", {"trainable": "vae", "group": "fixed"}, _vae_params(kl), h,
                 {"summary.json": {"test_neg_elbo": h["test_neg_elbo"][-1], **extra},
                  "images.npz": _vae_images(kl, rng, knobs.image_size, knobs.kl0_samples)}, t)
    for i in range(knobs.vae_search_trials):
        kl = float(rng.choice([0.1, 0.3, 1.0, 3.0, 10.0]))  # categorical, as in study/presets/homework.toml
        latent = int(rng.choice([8, 16, 32]))
        h, extra = _vae_history(1, knobs.epochs, knobs, scale=0.8 + 0.1 * math.log10(kl) + latent / 400)
        t += 200_000
        _log_run(client, exp_id, pid, f"vae_search_{i:03d}", {"trainable": "vae", "group": "search"},
                 _vae_params(kl, latent_dim=latent, lr=float(10 ** rng.uniform(-4, -2.5))), h,
                 {"summary.json": {"test_neg_elbo": h["test_neg_elbo"][-1], **extra}, "images.npz": _vae_images(1, rng, knobs.image_size)},
                 t)
    if knobs.toy_trials:
        add_toy_part(client, exp_id, pid, Path(root), t + 200_000, trials=knobs.toy_trials)
    client.set_terminated(pid, "FINISHED")
    return uri


# ------------------------------------------------------------------------------------------- a plugin part
TOY_EPOCHS = 4


def toy_space():
    from optuna.distributions import FloatDistribution, IntDistribution

    return {"width": IntDistribution(4, 64), "lr": FloatDistribution(1e-4, 1e-1, log=True)}


def toy_loss(width: int, lr: float, epoch: int) -> float:
    """The toy trainable's validation loss (trainables/trainable.py's example): best near lr=0.01, wide, late."""
    return (math.log10(lr) + 2) ** 2 + 1 / (epoch * width)


def add_toy_part(client, exp_id: str, parent_id: str, root: Path, t: int, part: str = "toy", trials: int = 6) -> int:
    """A part of the plugin trainable "toy" as study/ logs any part: tags trainable/study.part/group/ray.trial_id,
    every config value as params, val_loss per epoch (the objective, min), test_loss reported beside it, its space
    tag on the parent run and its Optuna study (named after the part) in root/optuna.db. The first trial is the
    study file's fixed run; one more trial FAILED with the lowest val_loss of all (never the chosen one)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(len(part))
    space = toy_space()
    client.set_tag(parent_id, SPACE_TAG + part, json.dumps({
        "space": {k: optuna.distributions.distribution_to_json(d) for k, d in space.items()},
        "metric": "val_loss", "mode": "min", "trainable": "toy"}))
    study = optuna.create_study(study_name=part, storage=f"sqlite:///{Path(root).resolve() / OPTUNA_DB}",
                                direction="minimize")
    study.set_user_attr("metric", "val_loss")
    study.set_user_attr("fixed_runs", 1)
    for i in range(trials + 1):
        failed = i == trials
        width, lr = (8, 0.01) if i == 0 else (int(rng.integers(4, 65)), float(10 ** rng.uniform(-3.5, -1)))
        val = [toy_loss(width, lr, e) for e in range(1, TOY_EPOCHS + 1)]
        history = {"val_loss": [0.001] if failed else val, "test_loss": [1.1 * v + 0.01 for v in val][:1 if failed else None],
                   "epoch": list(range(1, TOY_EPOCHS + 1))[:1 if failed else None], "epoch_time_s": [0.05] * (1 if failed else TOY_EPOCHS)}
        trial_id, group = f"{part}_{i:04d}", "fixed" if i == 0 else "search"
        t += 10_000
        _log_run(client, exp_id, parent_id, trial_id, {"trainable": "toy", PART_TAG: part, "group": group, TRIAL_TAG: trial_id},
                 {"width": width, "lr": lr, "epochs": TOY_EPOCHS, "name": "toy model"}, history, None, t,
                 status="FAILED" if failed else "FINISHED")
        study.add_trial(optuna.trial.create_trial(
            params={"width": width, "lr": lr}, distributions=space, value=None if failed else val[-1],
            state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
            user_attrs={RAY_TRIAL_ATTR: trial_id, GROUP_ATTR: group}))
    return t


def build_toy_store(root: Path, name: str = "toy-study", parts: dict[str, int] | None = None) -> Path:
    """A study folder (study.json, mlflow.db, optuna.db) of toy parts only: part name -> trials (default: "toy" with
    6 trials and "toy-b", a second part of the same trainable, with one)."""
    from mlflow.tracking import MlflowClient

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root.resolve() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(name, artifact_location=(root / "artifacts").resolve().as_uri())
    t = int(time.time() * 1000) - 1_000_000
    parent = client.create_run(exp_id, start_time=t, run_name=name,
                               tags={"study.kind": "toy.toml", "study.preset": "", "study.storage": str(root.resolve())})
    for part, trials in (parts or {"toy": 6, "toy-b": 1}).items():
        t = add_toy_part(client, exp_id, parent.info.run_id, root, t, part=part, trials=trials)
    client.set_terminated(parent.info.run_id, "FINISHED")
    (root / STUDY_STATE).write_text(json.dumps({"name": name, "mlflow_uri": uri}))
    return root
