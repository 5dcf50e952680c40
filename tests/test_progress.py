"""The progress line of `study run`: counts by state, epochs, best so far and time left; rewritten in place on
a terminal, a plain line every interval to a file."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from study.progress import PartProgress, progress_line

ROOT = Path(__file__).resolve().parents[1]


def _trial(status: str, epochs_run: int, value: float | None = None, epoch_s: float = 2.0, metric: str = "val_acc"):
    result = {"training_iteration": epochs_run, "time_this_iter_s": epoch_s} if epochs_run else {}
    if value is not None:
        result[metric] = value
    return SimpleNamespace(status=status, last_result=result)


def test_line_counts_states_epochs_best_and_time_left():
    trials = [_trial("TERMINATED", 10, 0.70), _trial("TERMINATED", 2, 0.80),  # done; pruned by ASHA at epoch 2
              _trial("ERROR", 1), _trial("RUNNING", 4, 0.75), _trial("PENDING", 0)]
    line = progress_line("covid", trials, planned=8, epochs=10, slots=2, metric="val_acc", mode="max", elapsed_s=75)
    # 3 trials never created and 1 pending: 4 x 10 epochs, plus 6 of the running one = 46 epochs x 2 s / 2 slots
    assert line == ("covid: 1 done, 1 running, 4 waiting, 1 pruned, 1 failed of 8 trials | epochs 17/63 | "
                    "best val_acc 0.8000 | 1m15s elapsed, <= 0m46s left")


def test_line_before_any_epoch_and_for_a_minimised_objective():
    line = progress_line("vae", [_trial("PENDING", 0)], 3, 20, 1, "val_neg_elbo", "min", 3)
    assert "0 done, 0 running, 3 waiting" in line and "best val_neg_elbo -" in line and "after the first epoch" in line
    trials = [_trial("RUNNING", 1, 300.0, metric="val_neg_elbo"), _trial("RUNNING", 1, 250.0, metric="val_neg_elbo")]
    assert "best val_neg_elbo 250.0000" in progress_line("vae", trials, 2, 2, 2, "val_neg_elbo", "min", 3)


def test_to_a_file_a_line_per_interval_and_the_last_one():
    progress = PartProgress("covid", 2, 2, 1, "val_acc", "max", interval_s=3600)
    assert progress.should_report([], done=False)  # the first line at once
    progress.report([], False)
    assert not progress.should_report([], done=False) and progress.should_report([], done=True)


_ON_A_TTY = """
from types import SimpleNamespace
from study.progress import PartProgress
p = PartProgress("covid", 2, 2, 1, "val_acc", "max")
p.report([SimpleNamespace(status="RUNNING", last_result={})], False)
p.report([SimpleNamespace(status="TERMINATED", last_result={"training_iteration": 2, "val_acc": 0.7})], True)
"""


def test_on_a_terminal_the_line_is_rewritten_in_place():
    """Under a pseudo-terminal (as in a shell): carriage return + erase line, one newline at the end only."""
    master, slave = pty.openpty()
    proc = subprocess.run([sys.executable, "-c", _ON_A_TTY], cwd=ROOT, stdout=slave, stderr=subprocess.PIPE,
                          timeout=60)
    os.close(slave)
    out = os.read(master, 65536).decode()
    os.close(master)
    assert proc.returncode == 0, proc.stderr
    assert out.count("\r\x1b[K") == 2 and out.rstrip("\r\n").count("\n") == 0, repr(out)
    assert "1 done, 0 running, 1 waiting" in out  # the second trial is not created yet
