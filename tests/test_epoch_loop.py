"""The shared epoch loop (`trainables.common`: resume_state, epochs_to_run, end_epoch), driven by a plugin-sized
toy fit: checkpoint before report, early stop, a resumed run continues the same curve, a changed config is refused."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch

from trainables.common import (EARLY_STOPPED, BestEpochs, end_epoch, epochs_to_run, load_checkpoint, resume_state,
                               rng_state, seed_everything, set_rng_state)

RESUMABLE = {"epochs", "patience"}


@dataclass(frozen=True)
class Toy:
    width: int = 3
    lr: float = 0.1
    epochs: int = 5
    patience: int = 0
    seed: int = 0


def toy_fit(cfg: Toy, report=None, *, checkpoint_dir=None, resume_from=None, values=None) -> list[float]:
    """A plugin's fit: noisy SGD on a linear map; `values` replaces the validation numbers (to force a stop)."""
    state = resume_state(resume_from, cfg, RESUMABLE)
    gen = seed_everything(cfg.seed)
    model = torch.nn.Linear(cfg.width, 1)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    tracker = BestEpochs("min", 1, cfg.patience, **(state["best"] if state else {}))
    losses: list[float] = list(state["losses"]) if state else []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], gen)
    for epoch in epochs_to_run(cfg, state):
        x = torch.randn(16, cfg.width, generator=gen)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean() + 0.01 * torch.randn(())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        tracker.update(epoch, [values[epoch - 1] if values else losses[-1]])
        own = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(gen), "losses": losses}
        if end_epoch(epoch, {"epoch": epoch, "loss": losses[-1]}, tracker, cfg, own,
                     checkpoint_dir=checkpoint_dir, report=report):
            break
    return losses


def test_the_checkpoint_is_written_before_each_report(tmp_path):
    seen = []

    def report(metrics):  # what the study's wrapper does: hand the folder over with the report
        seen.append((metrics["epoch"], load_checkpoint(tmp_path)["epoch"], load_checkpoint(tmp_path)["metrics"]))
    toy_fit(Toy(epochs=3), report, checkpoint_dir=tmp_path)
    assert [(e, ck) for e, ck, _ in seen] == [(1, 1), (2, 2), (3, 3)]
    assert all(saved["epoch"] == e for e, _, saved in seen)
    state = load_checkpoint(tmp_path)
    assert set(state) == {"epoch", "metrics", "config", "best", "model", "optimizer", "rng", "losses"}
    assert state["config"] == dataclasses.asdict(Toy(epochs=3))


def test_patience_stops_and_marks_report_and_checkpoint(tmp_path):
    seen: list[dict] = []
    losses = toy_fit(Toy(epochs=10, patience=2), seen.append, checkpoint_dir=tmp_path,
                     values=[5.0, 4.0, 4.5, 4.2, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert [m["epoch"] for m in seen] == [1, 2, 3, 4] and len(losses) == 4
    assert EARLY_STOPPED not in seen[2] and seen[3][EARLY_STOPPED] == 1.0
    assert load_checkpoint(tmp_path)["metrics"][EARLY_STOPPED] == 1.0


def test_before_report_adds_to_the_report_not_the_checkpoint(tmp_path):
    tracker, metrics, reported = BestEpochs("max"), {"epoch": 1}, []
    tracker.update(1, [0.5])
    stop = end_epoch(1, metrics, tracker, Toy(), {"extra": torch.ones(2)}, checkpoint_dir=tmp_path,
                     report=reported.append, before_report=lambda stop: {"test_loss": 0.25, "stopped": stop})
    assert stop is False and reported == [{"epoch": 1, "test_loss": 0.25, "stopped": False}]
    state = load_checkpoint(tmp_path)
    assert state["metrics"] == {"epoch": 1} and torch.equal(state["extra"], torch.ones(2))


def test_resume_continues_the_same_curve(tmp_path):
    whole = toy_fit(Toy(epochs=5))
    first = toy_fit(Toy(epochs=2), checkpoint_dir=tmp_path)
    assert toy_fit(Toy(epochs=5), resume_from=tmp_path) == whole and first == whole[:2]
    assert list(epochs_to_run(Toy(epochs=5), load_checkpoint(tmp_path))) == [3, 4, 5]
    assert list(epochs_to_run(Toy(epochs=2), load_checkpoint(tmp_path))) == []
    assert list(epochs_to_run(Toy(epochs=2), None)) == [1, 2]


def test_resume_state_refuses_a_changed_config_in_one_line(tmp_path):
    assert resume_state(None, Toy(), RESUMABLE) is None
    toy_fit(Toy(epochs=1), checkpoint_dir=tmp_path)
    assert resume_state(tmp_path, Toy(epochs=9, patience=3), RESUMABLE)["epoch"] == 1  # resumable changes pass
    with pytest.raises(ValueError) as err:
        resume_state(tmp_path, Toy(epochs=9, width=4, lr=0.5), RESUMABLE)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "lr (0.1, now 0.5), width (3, now 4)" in message and "only epochs, patience may change" in message
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resume_state(tmp_path / "missing", Toy(), RESUMABLE)
