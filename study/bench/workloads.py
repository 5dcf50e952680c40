"""Workloads 1-3 of `study bench`: one model at a time, the plain loop against the trainable's own `fit`.

Inputs are synthetic tensors of the real shapes (random walks of daily counts cut into windows; random uint8
images), so these workloads need no data files. Our side's time is the trainable's own `epoch_time_s`
(+ `eval_time_s` for the VAE), taken after the epoch's host sync.

The sequence trainable trains K = seeds (x2 with the time-split twin) models in one stacked model; here it trains
one (`seeds=1`, `time_twin=False`), as the plain loop does. Each epoch it evaluates the validation and the test
part; the plain loop evaluates one held-out set, so it is given both parts together: the same windows per epoch
on both sides. `study.bench.fused` is the workload where our side trains several models at once.
"""
from __future__ import annotations

from study.bench.timing import BenchRun, alternate, epoch_row, n_params

SEQUENCE_WORKLOADS = ("gru", "lstm", "rnn")
VAE_WORKLOADS = ("vae-homework", "vae-default")
SEQ = {"hidden_size": 128, "num_layers": 2, "seq_len": 30, "batch_size": 128, "lr": 1e-3}
VAE_HOMEWORK = {"arch": "homework_conv", "image_size": 64, "latent_dim": 256, "batch_size": 64, "lr": 1e-3}


# --------------------------------------------------------------------------------------- synthetic data
def synthetic_windows(n: int, seq_len: int, seed: int = 0):
    """Windows of log1p daily counts from random walks of a log-rate, labelled 'next day higher' (~45% positive)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    log_rate = rng.uniform(0, 8, (n, 1)) + np.cumsum(rng.normal(0, 0.15, (n, seq_len + 1)), axis=1)
    counts = rng.poisson(np.exp(np.clip(log_rate, -5, 12)))
    x = np.log1p(counts[:, :seq_len]).astype(np.float32)[..., None]
    y = (counts[:, seq_len] > counts[:, seq_len - 1]).astype(np.int64)
    return x, y


def synthetic_images(n: int, size: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def bench_splits(n: int, n_train: int, seed: int = 0):
    """{"random": a shuffled split, "time": the windows in order}: the first `n_train` windows of each train, the
    rest halved into validation and test (both splits have the same part sizes, as the real ones do)."""
    import numpy as np

    from data.windows import Split

    n_val = (n - n_train) // 2
    cut = lambda order: Split(order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:])  # noqa: E731
    return {"random": cut(np.random.default_rng(seed).permutation(n)), "time": cut(np.arange(n))}


def held_out(split):
    """The validation and test windows together: what the plain loop evaluates each epoch (ours: both parts)."""
    import numpy as np

    return np.concatenate([split.val, split.test])


def sequence_data(x, y, splits, split: str = "random"):
    """A SequenceData of synthetic windows x (N, L, F), y (N,) with `splits` (holding `split` and "time")."""
    import numpy as np

    from data.sequence_data import SequenceData

    k = min(4, len(x))
    return SequenceData(
        x=x, y=y, raw=np.expm1(x[..., 0]).astype(np.float64),
        label_day=(np.datetime64("2020-01-01") + np.arange(len(x))).astype("datetime64[D]"),
        split=split, splits=splits, x_latest=x[:k], latest_countries=[f"synthetic {i}" for i in range(k)],
        latest_iso2=[None] * k, prediction_date="2020-01-01", countries_c=[], data_hash="synthetic",
    )


# --------------------------------------------------------------------------------------- configs + models
def sequence_config(cell: str, device: str, epochs: int):
    """One model, as the plain loop trains: one seed, no time-split twin."""
    from trainables.sequence import SequenceConfig

    return SequenceConfig.from_dict(dict(cell=cell, epochs=epochs, device=device, seeds=1, time_twin=False, seed=0, **SEQ))


def vae_config(workload: str, device: str, epochs: int):
    """vae-homework: the report's conv VAE; vae-default: VAEConfig() as it is (only epochs/device/IW changed)."""
    from trainables.vae import VAEConfig

    extra = VAE_HOMEWORK if workload == "vae-homework" else {}
    return VAEConfig(epochs=epochs, device=device, iw_samples=0, seed=0, **extra)


def vae_hidden(cfg) -> tuple[int, ...]:
    """The widths a VAEConfig trains with (its own, or the architecture's default)."""
    from trainables.vae_models import DEFAULT_HIDDEN

    return tuple(cfg.hidden) if cfg.hidden is not None else DEFAULT_HIDDEN[cfg.arch]


def our_model(workload: str):
    """The model our path trains for a workload (for the same-shape check); for a sequence workload the trainable's
    stacked model holding one model (K=1: a leading dim of 1 on every parameter, input (L, K, B, F))."""
    if workload in SEQUENCE_WORKLOADS:
        from trainables.sequence_model import StackedClassifier

        cfg = sequence_config(workload, "cpu", 1)
        return StackedClassifier(cfg.cell, 1, cfg.hidden_size, cfg.num_layers, cfg.dropout, cfg.model_seeds)
    from trainables.vae_models import build_vae

    cfg = vae_config(workload, "cpu", 1)
    return build_vae(cfg.arch, cfg.image_size, cfg.latent_dim, cfg.hidden)


def plain_model(workload: str):
    """The model the plain loop trains for a workload."""
    from study.bench import plain as bench_plain

    if workload in SEQUENCE_WORKLOADS:
        return bench_plain.PlainSequenceModel(workload, SEQ["hidden_size"], SEQ["num_layers"])
    cfg = vae_config(workload, "cpu", 1)
    return bench_plain.plain_vae(cfg.arch, cfg.image_size, cfg.latent_dim, vae_hidden(cfg))


# --------------------------------------------------------------------------------------- the workloads
def bench_sequence(cell: str, run: BenchRun) -> dict:
    from study.bench import plain as bench_plain
    from trainables import sequence

    sizes, device = run.sizes, run.device
    x, y = synthetic_windows(sizes.windows + sizes.windows // 4, SEQ["seq_len"], seed=0)
    splits = bench_splits(len(x), sizes.windows)
    data = sequence_data(x, y, splits)
    main = splits["random"]
    x_tr, y_tr, x_te, y_te = x[main.train], y[main.train], x[held_out(main)], y[held_out(main)]

    def plain_round() -> list[float]:
        return bench_plain.sequence_epochs(
            x_tr, y_tr, x_te, y_te, cell=cell, hidden_size=SEQ["hidden_size"], num_layers=SEQ["num_layers"],
            batch_size=SEQ["batch_size"], lr=SEQ["lr"], epochs=sizes.epochs, device=device)

    def ours_round() -> list[float]:
        reported: list[dict] = []
        sequence.fit(sequence_config(cell, device, sizes.epochs), data, reported.append)
        return [m["epoch_time_s"] + m["eval_time_s"] for m in reported]

    plain, ours = alternate(plain_round, ours_round, sizes)
    what = (f"{cell.upper()} {SEQ['num_layers']}x{SEQ['hidden_size']}, L={SEQ['seq_len']}, "
            f"{sizes.windows:,} windows, batch {SEQ['batch_size']}")
    return epoch_row(cell, what, plain, ours, sizes, n_train=len(main.train), n_val=len(main.val),
                     n_test=len(main.test),
                     n_params=n_params(our_model(cell)))


def bench_vae(workload: str, run: BenchRun) -> dict:
    from study.bench import plain as bench_plain
    from trainables import vae

    sizes, device = run.sizes, run.device
    cfg = vae_config(workload, device, sizes.epochs)
    n = sizes.vae_homework_images if workload == "vae-homework" else sizes.vae_default_images
    images = synthetic_images(n + max(1, n // 10), cfg.image_size, seed=0)
    train, test = images[:n], images[n:]

    def plain_round() -> list[float]:
        return bench_plain.vae_epochs(
            train, test, arch=cfg.arch, image_size=cfg.image_size, latent_dim=cfg.latent_dim,
            hidden=vae_hidden(cfg), batch_size=cfg.batch_size, lr=cfg.lr, epochs=sizes.epochs, device=device)

    def ours_round() -> list[float]:
        reported: list[dict] = []
        vae.fit(cfg, train, test, test, reported.append)  # validates on the images the plain loop tests on
        return [m["epoch_time_s"] + m["eval_time_s"] for m in reported]

    plain, ours = alternate(plain_round, ours_round, sizes)
    label = "homework conv VAE" if workload == "vae-homework" else f"default VAE ({cfg.arch})"
    what = f"{label}, {cfg.image_size}x{cfg.image_size}, {n:,} images, batch {cfg.batch_size}"
    return epoch_row(workload, what, plain, ours, sizes, n_train=len(train), n_test=len(test),
                     n_params=n_params(our_model(workload)))
