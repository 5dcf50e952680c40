"""How a study's driver stops: a SIGTERM takes the Ctrl-C path, and the local Ray's processes go before the driver.

Why (measured with Ray 2.60 on Linux, 2 cores):
- Left to Ray, a SIGTERM to the driver is not a Ctrl-C: `ray.init` installs a Python handler first thing
  (`sys.exit(15)`), and the core worker it starts then a C++ one that prints a "*** SIGTERM received ***" stack
  dump. Tune is not stopped as on a Ctrl-C (experiment state saved, `study resume DIR` printed, exit 130).
- A SIGTERM while `ray.init` is still starting the node, before Ray holds on to it, leaves `ray.shutdown()` nothing
  to stop. The driver exits, and the GCS and the raylet die of the SIGKILL they asked the kernel for when their
  parent dies (PR_SET_PDEATHSIG). The raylet never logs "Raylet received SIGTERM" then, so its dashboard and
  runtime-env agents take its end for a crash and report it to the driver through the GCS, which is gone too: they
  wait out that call's 60 s timeout and live on for about 62 s (ray/_private/process_watcher.py,
  `report_raylet_error_logs` -> `publish_error_to_driver(..., 60)`). The same happens whenever `ray.shutdown()`
  has to SIGKILL a raylet that did not log its SIGTERM within its 1 s of grace.

So:
- `sigterm_as_ctrl_c()`: inside its block a SIGTERM is handed to the SIGINT handler in force (Tune's during a fit:
  it stops the experiment as on a Ctrl-C; otherwise Python's, a KeyboardInterrupt). `exit_code` then turns the
  interrupted study's 130 into 143 (128 + SIGTERM). `take_back_sigterm()` puts the handler back after `ray.init`
  replaced it; `was_sigterm(err)` tells the SystemExit(15) of Ray's own handler (in force while `ray.init` runs).
- `ray_processes(before)` and `end_processes(...)`: the processes that the local Ray started (the driver's new
  children that run Ray's own programs, and everything below them: raylet, GCS, workers, agents), found through
  /proc, made sure gone before the driver exits: each gets a few seconds to go by itself after `ray.shutdown()`,
  then a SIGTERM (the raylet logs it, and its agents see a clean end), then a SIGKILL. Nothing else is touched.
  Without /proc (not Linux) there is nothing to find, and Ray's own shutdown is all there is.
- `starting_ray()` around `ray.init`, and `leave(code)` at the command's end: a SIGTERM or a Ctrl-C that lands
  while `ray.init` builds the driver's core worker (`ray._raylet.CoreWorker.__cinit__`, about 0.4 s after the node
  is up) stops it half-way: the C++ core worker exists, its Python object does not, and `ray.shutdown()` cannot
  reach it. The study still stops cleanly and Ray's processes are ended, but the interpreter's teardown then runs
  the half-made core worker's destructors and dies of SIGABRT or SIGSEGV (measured: 1 in 6 such SIGTERMs without
  Ray's C++ handler, 1 in 3 to 3 in 3 with it). So once `ray.init` was interrupted, `leave` flushes the output and
  ends the process with `os._exit(code)`, skipping a teardown that has nothing left to do.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator

SIGTERM_EXIT = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM: 143
INTERRUPTED_EXIT = 130  # a study interrupted by a Ctrl-C (128 + SIGINT)

_received: set[int] = set()  # the signals this module turned into a Ctrl-C
_blocks = 0  # how many sigterm_as_ctrl_c() blocks are open
_ending = False  # inside ending(): a SIGTERM is only remembered
_ray_start_interrupted = False  # a SIGTERM or Ctrl-C stopped ray.init half-way (starting_ray)


def stop_fit_like_ctrl_c() -> bool:
    """From a Tune callback on the driver: call Tune's own SIGINT handler as a Ctrl-C would, so the loop ends after
    this step, the experiment is saved with its running trials as they are (resumable) and `fit()` returns. False
    where that cannot be done (not the main thread, or Tune installed no handler): the caller says why."""
    handler = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(handler) \
            or handler is signal.default_int_handler:
        return False
    # Tune says "Stop signal received (e.g. via SIGINT/Ctrl+C) ..." and how to restore: the study says its own.
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    handler(signal.SIGINT, None)
    return True


def _on_sigterm(signum: int, frame: Any) -> None:
    """A SIGTERM does what a Ctrl-C does: the SIGINT handler in force runs (Tune's stops the fit and saves the
    experiment; Python's raises KeyboardInterrupt). While Ray is being stopped (`ending()`) it is only noted."""
    _received.add(signum)
    if _ending:
        return
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIG_DFL, SIG_IGN or not set from Python: a SIGTERM still stops the study
        raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """For the block, a SIGTERM to this process is a Ctrl-C (see the module docstring); the previous handler is
    put back afterwards. Signal handlers belong to the main thread: elsewhere this does nothing."""
    global _blocks
    if not _main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _blocks += 1
    try:
        yield
    finally:
        _blocks -= 1
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def take_back_sigterm() -> None:
    """After `ray.init`: it replaced the SIGTERM handler (its own Python one, and its core worker's C++ stack dump
    on top); inside a `sigterm_as_ctrl_c()` block, a SIGTERM is a Ctrl-C again. Other signals keep Ray's handlers."""
    if _blocks and _main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def was_sigterm(err: SystemExit) -> bool:
    """Whether `err` is what Ray's own SIGTERM handler raises (`sys.exit(signal.SIGTERM)`; in force while
    `ray.init` runs), inside a `sigterm_as_ctrl_c()` block; then it is remembered like a SIGTERM we handled."""
    if _blocks and err.code == signal.SIGTERM:
        _received.add(signal.SIGTERM)
        return True
    return False


def terminated() -> bool:
    """Whether this process got a SIGTERM that it turned into a Ctrl-C."""
    return signal.SIGTERM in _received


def exit_code(code: int) -> int:
    """The command's exit code: an interrupted study (130) that a SIGTERM stopped exits 143."""
    return SIGTERM_EXIT if code == INTERRUPTED_EXIT and terminated() else code


@contextmanager
def starting_ray() -> Iterator[None]:
    """Around `ray.init`: an interrupt (Ray's own SIGTERM handler's SystemExit, or a KeyboardInterrupt) that
    escapes it is noted for `leave` and passed on."""
    global _ray_start_interrupted
    try:
        yield
    except KeyboardInterrupt:
        _ray_start_interrupted = True
        raise
    except SystemExit as err:
        if err.code == signal.SIGTERM:
            _ray_start_interrupted = True
        raise


def leave(code: int) -> int:
    """The command's exit code, returned; but once an interrupt stopped `ray.init` half-way, the process ends here
    with it (`os._exit`, after flushing the output): the interpreter's teardown would crash in the half-made core
    worker (see the module docstring). Every file and process of the study was closed or ended before."""
    if not _ray_start_interrupted:
        return code
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    os._exit(code)


@contextmanager
def ending() -> Iterator[None]:
    """While Ray is being stopped, a SIGTERM (the first one, or a second from an impatient supervisor) does not
    interrupt the stopping half-way: it is noted (`terminated()`), and the study exits as it would have."""
    global _ending
    outer = _ending
    _ending = True
    try:
        yield
    finally:
        _ending = outer


# The processes that the local Ray started, from /proc.

def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks since boot) of a process; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces and ')'
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _children() -> dict[int, list[int]]:
    """Every process's children (by parent pid); empty without /proc."""
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _stat(int(entry.name))
        if stat:
            out.setdefault(stat[1], []).append(int(entry.name))
    return out


def child_pids() -> set[int]:
    """This process's children now: taken before `ray.init`, none of them is Ray's."""
    return set(_children().get(os.getpid(), []))


def _ray_folder() -> str:
    import ray  # imported by now: only the local Ray's code calls this

    return os.path.dirname(os.path.abspath(ray.__file__)) + os.sep


def ray_processes(before: set[int], ray_folder: str | None = None) -> list[tuple[int, int]]:
    """(pid, start time) of every process that the local Ray started and that is still there: this process's
    children that were not there `before` and run one of Ray's own programs (an argument under `ray_folder`, Ray's
    package folder by default: the GCS, the raylet, the monitors), and every process below them (workers, agents).

    Take it while Ray is up: once the raylet has gone, its workers and agents belong to another parent."""
    folder = ray_folder or _ray_folder()
    children = _children()
    todo = [pid for pid in children.get(os.getpid(), [])
            if pid not in before and any(arg.startswith(folder) for arg in _cmdline(pid))]
    found: list[tuple[int, int]] = []
    while todo:
        pid = todo.pop()
        stat = _stat(pid)
        if stat:
            found.append((pid, stat[2]))
            todo.extend(children.get(pid, []))
    return found


def _parent(pid: int, started: int) -> int | None:
    """The parent pid of a process still running (not gone, not a zombie, and not another process that got the pid
    since); None otherwise."""
    stat = _stat(pid)
    return stat[1] if stat is not None and stat[0] not in "ZX" and stat[2] == started else None


def _alive(pid: int, started: int) -> bool:
    return _parent(pid, started) is not None


def end_processes(procs: list[tuple[int, int]], grace_s: float = 3.0, term_s: float = 2.0,
                  kill_s: float = 2.0) -> list[tuple[int, int]]:
    """Make sure `procs` (from `ray_processes`) are gone: `grace_s` to go by themselves (after `ray.shutdown()`
    stopped the raylet, its workers and agents do), then a SIGTERM and `term_s`, then a SIGKILL and `kill_s`.
    Returns those still there (none, unless the kernel holds a process in uninterruptible sleep).

    No grace when one of this process's own children is still there: `ray.shutdown()` stops (and waits for) those
    it knows, so it knew none of them (a SIGTERM stopped `ray.init` half-way), and nothing else will stop them."""
    unknown_to_ray = any(_parent(pid, started) == os.getpid() for pid, started in procs)
    for sig, wait_s in ((None, 0.0 if unknown_to_ray else grace_s), (signal.SIGTERM, term_s),
                        (signal.SIGKILL, kill_s)):
        left = [p for p in procs if _alive(*p)]
        if not left:
            return []
        if sig is not None:
            for pid, started in left:
                if _alive(pid, started):  # checked again just before: never a pid that was given out anew
                    with suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(_alive(*p) for p in left):
            time.sleep(0.05)
    return [p for p in procs if _alive(*p)]
