"""Ending what a test started in a process group of its own, and only that (never `pkill`, never `ray stop`)."""
from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, term_s: float = 10, kill_s: float = 10) -> None:
    """End a process that a test started in a process group of its own (`start_new_session=True`) and everything
    in that group: a SIGTERM to the group, a SIGKILL if the command outlives `term_s`, and a last SIGKILL for
    children that outlived the command (a Ray node's GCS and raylet, an MLflow server's workers). Only that group."""
    for sig, wait in ((signal.SIGTERM, term_s), (signal.SIGKILL, kill_s)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
