"""The sequence classifier: stacked models == models trained alone, the loop learns, fails loudly, resumes, repeats."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from data.sequence_data import SequenceData, load_source
from data.windows import Split
from trainables.common import NonFiniteLossError
from trainables.sequence import SequenceConfig, fit, train
from trainables.sequence_model import StackedClassifier

TORCH_CELLS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


# ------------------------------------------------------------------------------------------- the cells
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_stacked_classifier_model_k_is_torch_nn_with_its_weights(cell, layers):
    """Each stacked model computes what torch.nn.{RNN,LSTM,GRU} + Linear compute with model k's parameters."""
    model = StackedClassifier(cell, 2, 6, layers, 0.0, seeds=[3, 4, 5]).double()
    x = torch.randn(7, 3, 5, 2, dtype=torch.float64)  # (T, K, B, F)
    logits = model(x)
    for k in range(3):
        state = model.torch_state(k)
        rnn = TORCH_CELLS[cell](2, 6, layers).double()
        rnn.load_state_dict({n[4:]: v for n, v in state.items() if n.startswith("rnn.")})
        out, _ = rnn(x[:, k])
        ref = out[-1] @ state["head.weight"].T + state["head.bias"]
        torch.testing.assert_close(logits[k], ref)


def test_a_models_weights_depend_on_its_seed_only():
    a = StackedClassifier("gru", 1, 4, 1, 0.0, seeds=[0, 1, 2])
    b = StackedClassifier("gru", 1, 4, 1, 0.0, seeds=[2, 7])
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa[2], pb[0])
        assert not torch.equal(pa[0], pa[1])


# ------------------------------------------------------------------------------------------- the loop
def synthetic(n=480, seq_len=8, seed=0, poison=False, country_sizes=False) -> SequenceData:
    """Learnable windows: label = is the last value above zero. Random split and time split of equal part sizes
    (as the data layer makes them); `country_sizes` gives the main split other sizes (a second stack)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, seq_len, 1)).astype(np.float32)
    if poison:
        x[0, 0, 0] = np.nan
    y = (x[:, -1, 0] > 0).astype(np.int64)
    perm = rng.permutation(n)
    a, b = int(0.7 * n), int(0.85 * n)
    time = Split(np.arange(a), np.arange(a, b), np.arange(b, n))
    main = Split(perm[:a], perm[a:b], perm[b:]) if not country_sizes else Split(perm[:300], perm[300:400], perm[400:])
    name = "country" if country_sizes else "random"
    return SequenceData(
        x=x, y=y, raw=np.abs(x[..., 0]).astype(np.float64), label_day=np.arange(n).astype("datetime64[D]"),
        split=name, splits={name: main, "time": time},
        x_latest=rng.standard_normal((3, seq_len, 1)).astype(np.float32),
        latest_countries=["Atlantis", "Freedonia", "Ruritania"], latest_iso2=["at", None, "ru"],
        prediction_date="2020-05-01", countries_c=["Atlantis", "Freedonia"], data_hash="0" * 16,
    )


SMALL = dict(hidden_size=8, seq_len=8, batch_size=32, epochs=4, lr=0.01, device="cpu", num_threads=1, seeds=2)


def run(data=None, **kw):
    cfg = SequenceConfig.from_dict({**SMALL, **kw})
    seen: list[dict] = []
    out = fit(cfg, data if data is not None else synthetic(), seen.append)
    return out, seen


def curve(history):
    return [{k: v for k, v in m.items() if k not in ("epoch_time_s", "eval_time_s")} for m in history]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_loss_falls_and_metrics_are_reported(cell):
    out, history = run(cell=cell, epochs=5)
    assert [m["epoch"] for m in history] == [1, 2, 3, 4, 5]
    means = {f"{p}_{w}{s}" for p in ("train", "val", "test") for w in ("loss", "acc") for s in ("", "_time")}
    stds = {f"{p}_{w}{s}_std" for p in ("train", "val", "test") for w in ("loss", "acc") for s in ("", "_time")}
    ens = {f"{p}_acc{s}_ens" for p in ("val", "test") for s in ("", "_time")}
    curves = {f"epoch_{k}" for k in means | stds}
    assert set(history[0]) == means | stds | ens | curves | {"epoch", "epoch_time_s", "eval_time_s", "best_epoch"}
    assert history[-1]["epoch_train_loss"] < 0.8 * history[0]["epoch_train_loss"]
    assert history[-1]["val_acc"] > 0.8 and history[-1]["test_acc"] > 0.8 and history[-1]["test_acc_time"] > 0.8
    assert out["n_train"] == 336 and out["n_val"] == 72 and out["n_test"] == 72
    assert 0.3 <= out["majority_rate"] <= 0.7 and out["seeds"] == [0, 1]
    assert [(m["seed"], m["split"]) for m in out["models"]] == [(0, "random"), (1, "random"), (0, "time"), (1, "time")]
    assert np.mean([m["test_acc"] for m in out["models"][:2]]) == pytest.approx(out["test_acc"])
    assert out["constant_models"] == 0


def test_stacked_seeds_and_splits_give_the_curves_of_models_trained_one_by_one():
    """K = 2S models in one stacked trial == S trials of one seed (each: its main model and its time twin)."""
    data = synthetic()
    together, history = run(data, cell="gru", seeds=3, seed=5, epochs=3)
    alone = [run(data, cell="gru", seeds=1, seed=s, epochs=3) for s in (5, 6, 7)]
    for epoch in range(3):
        for key in ("train_loss", "val_loss", "test_loss", "val_acc", "test_acc", "val_acc_time", "test_loss_time",
                    "epoch_train_loss", "epoch_val_acc", "epoch_test_loss_time"):
            values = [h[epoch][key] for _, h in alone]
            assert history[epoch][key] == pytest.approx(np.mean(values), rel=1e-5, abs=1e-6), (epoch, key)
            assert history[epoch][key + "_std"] == pytest.approx(np.std(values, ddof=1), rel=1e-4, abs=1e-6)
        assert history[epoch]["best_epoch"] == pytest.approx(np.mean([h[epoch]["best_epoch"] for _, h in alone]))
    for m in together["models"]:
        one = next(o for o, _ in alone if o["seeds"] == [m["seed"]])
        twin = next(x for x in one["models"] if x["split"] == m["split"])
        assert m["val_acc"] == pytest.approx(twin["val_acc"], abs=1e-9)
        assert m["test_loss"] == pytest.approx(twin["test_loss"], rel=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_stacked_training_matches_torch_nn_trained_alone(cell):
    """Model k of a stack follows the curve of torch.nn.GRU/LSTM + Linear trained alone from its weights on its
    batches (same permutation generator, same fused Adam): the stack changes the arithmetic's grouping only."""
    data = synthetic()
    cfg = SequenceConfig.from_dict({**SMALL, "cell": cell, "seeds": 2, "epochs": 3, "time_twin": False})
    out, _ = run(data, **{k: v for k, v in dataclasses.asdict(cfg).items() if k in SMALL or k in ("cell", "time_twin")})
    split = data.splits["random"]
    x_all, y_all = torch.from_numpy(data.x), torch.from_numpy(data.y)
    stacked = StackedClassifier(cell, 1, cfg.hidden_size, 1, 0.0, cfg.model_seeds)
    for k, seed in enumerate(cfg.model_seeds):
        state = stacked.torch_state(k)
        rnn = TORCH_CELLS[cell](1, cfg.hidden_size, batch_first=True)
        rnn.load_state_dict({n[4:]: v for n, v in state.items() if n.startswith("rnn.")})
        head = torch.nn.Linear(cfg.hidden_size, 2)
        head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
        params = [*rnn.parameters(), *head.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.lr, fused=True)
        gen = torch.Generator().manual_seed(seed)
        train_idx = torch.from_numpy(split.train)
        val, test = torch.from_numpy(split.val), torch.from_numpy(split.test)
        best_val, scored = -1.0, None
        for _ in range(cfg.epochs):
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                loss = F.cross_entropy(head(rnn(x_all[idx])[0][:, -1]), y_all[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():  # scored at its best validation epoch (the first of equal ones)
                val_acc = (head(rnn(x_all[val])[0][:, -1]).argmax(1) == y_all[val]).double().mean().item()
                logits = head(rnn(x_all[test])[0][:, -1])
                if val_acc > best_val:
                    best_val = val_acc
                    scored = (F.cross_entropy(logits, y_all[test]).item(),
                              (logits.argmax(1) == y_all[test]).double().mean().item())
        loss, acc = scored
        assert out["models"][k]["val_acc"] == pytest.approx(best_val, abs=1.5 / len(val)), k
        assert out["models"][k]["test_loss"] == pytest.approx(loss, rel=2e-4), k
        assert out["models"][k]["test_acc"] == pytest.approx(acc, abs=1.5 / len(test)), k


def test_seed_ensemble_is_the_mean_probability_of_the_models_trained_one_by_one(tmp_path):
    """val/test_acc_ens of S stacked seeds == averaging P(increase) of the same S models trained alone, each at
    its best validation epoch (read back from its model.pt), then thresholding at 0.5."""
    data = synthetic()
    common = dict(cell="gru", epochs=4, time_twin=False)
    together, _ = run(data, seeds=3, seed=5, **common)
    probs = {"val": [], "test": []}
    for s in (5, 6, 7):
        cfg = SequenceConfig.from_dict({**SMALL, **common, "seeds": 1, "seed": s})
        fit(cfg, data, artifact_dir=tmp_path / str(s))
        saved = torch.load(tmp_path / str(s) / "model.pt", weights_only=True)
        model = StackedClassifier("gru", 1, cfg.hidden_size, 1, 0.0, [s])
        model.load_state_dict(saved["state_dict"])
        model.eval()
        for part in probs:
            idx = getattr(data.splits["random"], part)
            with torch.no_grad():
                logits = model(torch.from_numpy(data.x[idx]).transpose(0, 1).unsqueeze(1))[0]
            probs[part].append(torch.softmax(logits, -1)[:, 1].numpy())
    for part in probs:
        truth = data.y[getattr(data.splits["random"], part)]
        expected = np.mean((np.mean(probs[part], 0) > 0.5) == truth)
        assert together[f"{part}_acc_ens"] == pytest.approx(expected, abs=1e-9), part
    assert "test_acc_time_ens" not in together


def test_patience_stops_and_scores_the_best_epoch():
    """A run stops once no model improved for `patience` epochs; its numbers are those of each model's best
    validation epoch (the curves keep every epoch's own values)."""
    out, history = run(cell="gru", epochs=30, lr=0.05, patience=2, time_twin=False)
    last = history[-1]
    assert len(history) < 30 and last["stopped_by_patience"] == 1.0
    bests = [m["best_epoch"] for m in out["models"]]
    assert max(bests) == len(history) - 2 and last["best_epoch"] == pytest.approx(np.mean(bests))
    assert last["val_acc"] == pytest.approx(np.mean([m["val_acc"] for m in out["models"]]))
    # each model's best is at least its value at any epoch, so their mean beats every epoch's mean
    assert last["val_acc"] >= max(h["epoch_val_acc"] for h in history) - 1e-9
    assert all("stopped_by_patience" not in h for h in history[:-1])
    full, full_history = run(cell="gru", epochs=len(history), lr=0.05, time_twin=False)
    assert curve(full_history) == curve(history[:-1]) + [{k: v for k, v in curve(history)[-1].items()
                                                          if k != "stopped_by_patience"}]
    assert full["confusion"] == out["confusion"]


def test_groups_of_other_sizes_train_in_separate_stacks():
    out, history = run(synthetic(country_sizes=True), seeds=2, epochs=2)
    assert out["n_train"] == 300 and out["n_val"] == 100
    assert {"val_acc", "val_acc_time", "test_acc_time_std"} <= set(history[-1])


def test_time_split_reports_the_same_number_twice_and_no_twin_reports_none():
    data = synthetic()
    data = dataclasses.replace(data, split="time", splits={"time": data.splits["time"]})
    _, history = run(data, epochs=1)
    assert history[0]["test_acc_time"] == history[0]["test_acc"] and history[0]["val_acc_time"] == history[0]["val_acc"]
    assert history[0]["test_acc_time_std"] == history[0]["test_acc_std"]
    _, history = run(time_twin=False, epochs=1)
    assert not any("_time" in k for k in history[0] if k not in ("epoch_time_s", "eval_time_s"))


def test_one_seed_reports_no_spread():
    _, history = run(seeds=1, epochs=1)
    assert "val_acc" in history[0] and not any(k.endswith("_std") for k in history[0])


@pytest.mark.parametrize("bad, word", [
    ({"colour": "red"}, "colour"), ({"cell": "transformer"}, "cell"), ({"lr": "abc"}, "lr"),
    ({"lr": 1e6}, "lr"), ({"hidden_size": 0}, "hidden_size"), ({"seeds": 0}, "seeds"), ({"seq_len": 2.5}, "seq_len"),
    ({"epochs": True}, "epochs"), ({"dropout": 1.0}, "dropout"), ({"threshold": float("nan")}, "threshold"),
    ({"seed": -1}, "seed"),
])
def test_bad_config_is_rejected_by_name(bad, word):
    with pytest.raises(ValueError, match=word):
        SequenceConfig.from_dict({"cell": "gru", **bad})


def test_whole_number_floats_become_ints():
    assert SequenceConfig.from_dict({"hidden_size": 32.0}).hidden_size == 32


def test_nan_stops_the_run_naming_epoch_and_term():
    with pytest.raises(NonFiniteLossError, match=r"train_loss.*epoch 1"):
        run(data=synthetic(poison=True))


def test_same_seed_same_metrics():
    _, a = run(cell="lstm")
    _, b = run(cell="lstm")
    assert curve(a) == curve(b)


@pytest.mark.parametrize("split", ["random", "time"])
def test_resume_continues_the_same_curve(tmp_path, split):
    data = synthetic()
    if split == "time":
        data = dataclasses.replace(data, split="time", splits={"time": data.splits["time"]})
    cfg = SequenceConfig.from_dict({**SMALL, "split": split, "dropout": 0.3, "num_layers": 2})
    full = []
    whole = fit(cfg, data, full.append)
    first = []
    fit(dataclasses.replace(cfg, epochs=2), data, first.append, checkpoint_dir=tmp_path / "ck")
    rest = []
    resumed = fit(cfg, data, rest.append, resume_from=tmp_path / "ck")
    assert curve(first + rest) == curve(full)
    assert resumed["confusion"] == whole["confusion"] and resumed["predictions"] == whole["predictions"]


def test_resume_refuses_a_different_model(tmp_path):
    data = synthetic()
    fit(SequenceConfig.from_dict({**SMALL, "epochs": 1}), data, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="hidden_size"):
        fit(SequenceConfig.from_dict({**SMALL, "hidden_size": 4}), data, resume_from=tmp_path)


def test_artefacts_are_written(tmp_path):
    out = fit(SequenceConfig.from_dict({**SMALL, "epochs": 1}), synthetic(), artifact_dir=tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"summary.json", "confusion.json", "predictions.json", "model.pt"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads(json.dumps(out))
    confusion = json.loads((tmp_path / "confusion.json").read_text())
    # summed over the main models (2 seeds) on the 72 test windows
    assert confusion["labels"] == ["no increase", "increase"] and sum(map(sum, confusion["matrix"])) == 2 * 72
    preds = json.loads((tmp_path / "predictions.json").read_text())
    assert preds["date"] == "2020-05-01"
    assert preds["countries"]["Freedonia"]["iso2"] is None
    assert all(0 <= c["p_increase"] <= 1 and c["p_increase_std"] >= 0 for c in preds["countries"].values())
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    cfg = SequenceConfig.from_dict(saved["config"])
    model = StackedClassifier(cfg.cell, 1, cfg.hidden_size, cfg.num_layers, cfg.dropout, cfg.model_seeds + cfg.model_seeds)
    model.load_state_dict(saved["state_dict"])


# ------------------------------------------------------------------------------------------- real data
@pytest.mark.integration
def test_real_covid_gru_beats_the_majority_rate(real_data_dir):
    source = load_source(str(real_data_dir), "homework")  # as a study's driver does: read once, shared by the trials
    out = train({"cell": "gru", "seq_len": 10, "epochs": 4, "hidden_size": 32, "batch_size": 64, "lr": 5e-3,
                 "date_range": "homework", "features": "relative+weekday", "seeds": 2,
                 "data_dir": str(real_data_dir), "device": "cpu"}, data=source)
    assert out["test_acc"] > out["majority_rate"] + 0.05, {k: out[k] for k in ("test_acc", "majority_rate")}
    assert out["test_acc_time"] > out["majority_rate_time"], {k: out[k] for k in ("test_acc_time", "majority_rate_time")}
    assert sum(map(sum, out["confusion"]["matrix"])) == 2 * out["n_test"]
    assert len(out["predictions"]) > 150  # every country with data, not only set C


def test_keep_freed_memory_stops_page_faults_of_repeated_large_allocations():
    """Memory freed at the end of a step is reused by the next rather than faulted in from the OS again.

    A 40 MB buffer: above the largest mmap threshold glibc adapts to by itself (32 MiB), so by default every
    allocation is a fresh mapping (~9,800 page faults each), deterministic where the faults of real training
    steps vary with heap fragmentation (measured there: ~200,000 per fused epoch without the setting)."""
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    code = """
import resource, torch
from trainables.common import keep_freed_memory
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        buffer = torch.empty(10_000_000).fill_(1.0)
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
default = faults()
assert keep_freed_memory()
for _ in range(3):  # the heap grows to hold the buffer (measured: faults in the first two rounds, then none)
    faults()
print(default, max(faults(), faults()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    default, kept = int(out[0]), int(out[1])
    assert kept < 100 and default > 40_000, (default, kept)  # measured: 48,830 without, 0 with
