"""The sequence classifier: hand-written cells == torch's, the loop learns, fails loudly, resumes, repeats itself."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from data.sequence_data import SequenceData, load_source
from trainables.common import NonFiniteLossError
from trainables.rnn_cells import ManualRNN, layer_forward
from trainables.sequence import SequenceClassifier, SequenceConfig, fit, train

TORCH_CELLS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


# ------------------------------------------------------------------------------------------- the cells
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_manual_cells_match_torch_outputs_and_gradients(cell, layers):
    torch.manual_seed(0)
    ref = TORCH_CELLS[cell](3, 5, layers, batch_first=True).double()
    man = ManualRNN(cell, 3, 5, layers).double()
    assert [n for n, _ in man.named_parameters()] == [n for n, _ in ref.named_parameters()]
    man.load_state_dict(ref.state_dict())
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    xr, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_r, h_r = ref(xr)
    out_m, h_m = man(xm)
    torch.testing.assert_close(out_m, out_r)
    for a, b in zip(h_m if cell == "lstm" else (h_m,), h_r if cell == "lstm" else (h_r,)):
        torch.testing.assert_close(a, b)
    w = torch.randn_like(out_r)
    (out_r * w).sum().backward()
    (out_m * w).sum().backward()
    torch.testing.assert_close(xm.grad, xr.grad)
    for (name, pm), (_, pr) in zip(man.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(pm.grad, pr.grad, msg=lambda m: f"{name}: {m}")


def test_layer_forward_batches_over_models():
    """Weights with a leading K dim train K models in one set of kernels (issue 6) and equal K separate runs."""
    torch.manual_seed(1)
    k, g, h = 3, 3 * 4, 4
    x = torch.randn(k, 2, 6, 1, dtype=torch.float64)
    w_ih, w_hh = torch.randn(k, g, 1, dtype=torch.float64), torch.randn(k, g, h, dtype=torch.float64)
    b_ih, b_hh = torch.randn(k, g, dtype=torch.float64), torch.randn(k, g, dtype=torch.float64)
    out, _, _ = layer_forward("gru", x, w_ih, w_hh, b_ih, b_hh)
    for i in range(k):
        one, _, _ = layer_forward("gru", x[i], w_ih[i], w_hh[i], b_ih[i], b_hh[i])
        torch.testing.assert_close(out[i], one)


def test_state_dict_loads_into_either_impl():
    torch.manual_seed(2)
    cudnn = SequenceClassifier(SequenceConfig(cell="lstm", hidden_size=6, num_layers=2))
    manual = SequenceClassifier(SequenceConfig(cell="lstm", hidden_size=6, num_layers=2, impl="manual"))
    manual.load_state_dict(cudnn.state_dict())
    x = torch.randn(5, 9, 1)
    torch.testing.assert_close(manual(x), cudnn(x))


# ------------------------------------------------------------------------------------------- the loop
def synthetic(n=384, seq_len=8, seed=0, poison=False) -> SequenceData:
    """Learnable windows: label = is the last value above zero. Time split = a second draw of the same rule."""
    rng = np.random.default_rng(seed)

    def draw(m):
        x = rng.standard_normal((m, seq_len, 1)).astype(np.float32)
        return x, (x[:, -1, 0] > 0).astype(np.int64)

    (xa, ya), (xb, yb), (xc, yc), (xd, yd) = draw(n), draw(n // 3), draw(n), draw(n // 3)
    if poison:
        xa[0, 0, 0] = np.nan
    return SequenceData(
        x_train=xa, y_train=ya, x_test=xb, y_test=yb,
        x_train_time=xc, y_train_time=yc, x_test_time=xd, y_test_time=yd,
        x_latest=rng.standard_normal((3, seq_len, 1)).astype(np.float32),
        latest_countries=["Atlantis", "Freedonia", "Ruritania"], latest_iso2=["at", None, "ru"],
        prediction_date="2020-05-01", countries_c=["Atlantis", "Freedonia"], data_hash="0" * 16,
    )


SMALL = dict(hidden_size=8, seq_len=8, batch_size=32, epochs=4, lr=0.01, device="cpu", num_threads=1)


def run(data=None, report_to=None, **kw):
    cfg = SequenceConfig.from_dict({**SMALL, **kw})
    seen = [] if report_to is None else report_to
    out = fit(cfg, data if data is not None else synthetic(), seen.append)
    return out, seen


def curve(history):
    return [{k: v for k, v in m.items() if k != "epoch_time_s"} for m in history]


@pytest.mark.parametrize("impl", ["cudnn", "manual"])
def test_loss_falls_and_metrics_are_reported(impl):
    out, history = run(impl=impl, epochs=5)
    assert [m["epoch"] for m in history] == [1, 2, 3, 4, 5]
    expected = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_loss_time", "test_acc_time",
                "epoch_time_s"}
    assert set(history[0]) == expected
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["test_acc"] > 0.8 and history[-1]["test_acc_time"] > 0.8
    assert out["n_train"] == 384 and out["n_test"] == 128 and 0.5 <= out["majority_rate"] <= 1
    assert 0.5 <= out["majority_rate_time"] <= 1


def test_time_split_reports_the_same_number_twice_and_no_twin_reports_none():
    _, history = run(split="time", epochs=1)
    assert history[0]["test_acc_time"] == history[0]["test_acc"]
    _, history = run(time_twin=False, epochs=1)
    assert "test_acc_time" not in history[0] and "test_loss_time" not in history[0]


def test_unknown_key_is_rejected_by_name():
    with pytest.raises(ValueError, match="colour"):
        SequenceConfig.from_dict({"cell": "gru", "colour": "red"})
    with pytest.raises(ValueError, match="cell"):
        SequenceConfig.from_dict({"cell": "transformer"})


def test_nan_stops_the_run_naming_epoch_and_term():
    with pytest.raises(NonFiniteLossError, match=r"train_loss.*epoch 1"):
        run(data=synthetic(poison=True))


def test_same_seed_same_metrics():
    _, a = run(impl="manual", cell="lstm")
    _, b = run(impl="manual", cell="lstm")
    assert curve(a) == curve(b)


@pytest.mark.parametrize("split", ["random", "time"])
def test_resume_continues_the_same_curve(tmp_path, split):
    data = synthetic()
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
    assert confusion["labels"] == ["no increase", "increase"] and sum(map(sum, confusion["matrix"])) == 128
    preds = json.loads((tmp_path / "predictions.json").read_text())
    assert preds["date"] == "2020-05-01"
    assert preds["countries"]["Freedonia"]["iso2"] is None
    assert all(0 <= c["p_increase"] <= 1 for c in preds["countries"].values())
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    model = SequenceClassifier(SequenceConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])


# ------------------------------------------------------------------------------------------- real data
@pytest.mark.integration
def test_real_covid_gru_beats_the_majority_rate(real_data_dir):
    source = load_source(str(real_data_dir))  # as a study's driver does: read once, shared by the trials
    out = train({"cell": "gru", "seq_len": 30, "epochs": 5, "hidden_size": 32, "batch_size": 256, "lr": 5e-3,
                 "data_dir": str(real_data_dir), "device": "cpu", "time_twin": False}, data=source)
    assert out["test_acc"] > out["majority_rate"] + 0.05, {k: out[k] for k in ("test_acc", "majority_rate")}
    assert sum(map(sum, out["confusion"]["matrix"])) == out["n_test"]
    assert len(out["predictions"]) > 150  # every country with data, not only set C
    assert "test_acc_time" not in out  # no twin asked for: no leakage-free number, rather than a leaky one
