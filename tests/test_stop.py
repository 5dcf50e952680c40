"""study.stop without Ray: a SIGTERM takes the Ctrl-C path, and the processes a driver's Ray started are ended, only
those. The signal checks run in a child process of their own (a SIGTERM to pytest itself would end the run)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from study import stop

ROOT = Path(__file__).resolve().parents[1]

_SIGNALS = """
import os, signal, time
from study import stop

def deliver():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)  # the Python handler runs in the main thread, between two bytecodes

# No Tune: a KeyboardInterrupt, as a Ctrl-C; 130 becomes 143, other codes stay; the handler is put back after.
print("BEFORE", stop.terminated(), stop.exit_code(130))
try:
    with stop.sigterm_as_ctrl_c():
        deliver()
    print("NOT INTERRUPTED")
except KeyboardInterrupt:
    print("INTERRUPTED", stop.terminated(), stop.exit_code(130), stop.exit_code(0), stop.exit_code(1))
print("PUT BACK", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)

# A Tune fit in progress: its SIGINT handler gets the signal (it stops the fit), nothing is raised.
calls = []
signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
with stop.sigterm_as_ctrl_c():
    deliver()
print("TUNE", calls == [signal.SIGINT])
signal.signal(signal.SIGINT, signal.default_int_handler)

# ray.init replaced the handler (here: a stand-in); take_back_sigterm makes it ours again.
with stop.sigterm_as_ctrl_c():
    signal.signal(signal.SIGTERM, lambda signum, frame: print("RAY'S HANDLER"))
    stop.take_back_sigterm()
    try:
        deliver()
    except KeyboardInterrupt:
        print("TAKEN BACK")
    # While Ray is being stopped a SIGTERM is only noted.
    with stop.ending():
        deliver()
        print("ENDING NOT INTERRUPTED")
    # Ray's own handler (sys.exit(15)), while ray.init runs
    print("RAY EXIT", stop.was_sigterm(SystemExit(signal.SIGTERM)), stop.was_sigterm(SystemExit(1)))
print("OUTSIDE", stop.was_sigterm(SystemExit(signal.SIGTERM)))
stop.take_back_sigterm()
print("NOT TAKEN OUTSIDE", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_sigterm_takes_the_ctrl_c_path():
    out = subprocess.run([sys.executable, "-c", _SIGNALS], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == [
        "BEFORE False 130",
        "INTERRUPTED True 143 0 1",
        "PUT BACK True",
        "TUNE True",
        "TAKEN BACK",
        "ENDING NOT INTERRUPTED",
        "RAY EXIT True False",
        "OUTSIDE False",
        "NOT TAKEN OUTSIDE True",
    ], out.stdout + out.stderr[-2000:]


_LEAVE = """
import atexit, signal, sys
from study import stop

atexit.register(lambda: print("TEARDOWN RAN", flush=True))
print("NOT INTERRUPTED", stop.leave(3))  # returned: nothing stopped ray.init
for err in (SystemExit(1), SystemExit(signal.SIGTERM) if sys.argv[1] == "sigterm" else KeyboardInterrupt()):
    try:
        with stop.starting_ray():  # a stand-in for ray.init stopped half-way
            raise err
    except BaseException as caught:
        print("PASSED ON", type(caught).__name__, flush=True)
print("OUTPUT KEPT", end="")  # not flushed: leave flushes it
stop.leave(7)
print("AFTER LEAVE")
"""


@pytest.mark.parametrize("interrupt", ["sigterm", "ctrl-c"])
def test_an_interrupted_ray_start_ends_the_process_without_its_teardown(interrupt):
    """After ray.init was interrupted, `leave` ends the process with the command's code, its output flushed, and
    without the interpreter's teardown (atexit handlers, destructors), which crashed in the half-made core worker.
    Another exit out of ray.init (here SystemExit(1)) is not an interrupt."""
    out = subprocess.run([sys.executable, "-c", _LEAVE, interrupt], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 7, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["NOT INTERRUPTED 3", "PASSED ON SystemExit",
                                       f"PASSED ON {'SystemExit' if interrupt == 'sigterm' else 'KeyboardInterrupt'}",
                                       "OUTPUT KEPT"], out.stdout


# A stand-in for one of Ray's programs: it starts a child that ignores SIGTERM (as an agent stuck in a call does)
# and prints that child's pid.
_DAEMON = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def _running(proc: subprocess.Popen | int) -> bool:
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc (Linux)")
def test_only_the_processes_ray_started_are_ended(tmp_path):
    fake_ray = tmp_path / "ray"
    fake_ray.mkdir()
    (fake_ray / "daemon.py").write_text(_DAEMON)
    daemon_cmd = [sys.executable, str(fake_ray / "daemon.py")]
    started_before = subprocess.Popen(daemon_cmd, stdout=subprocess.PIPE, text=True)  # there before "ray.init"
    grandchildren = [int(started_before.stdout.readline())]
    before = stop.child_pids()
    daemon = subprocess.Popen(daemon_cmd, stdout=subprocess.PIPE, text=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # ours, but not Ray's
    try:
        grandchildren.append(int(daemon.stdout.readline()))
        procs = stop.ray_processes(before, ray_folder=str(fake_ray) + os.sep)
        assert {pid for pid, _ in procs} == {daemon.pid, grandchildren[1]}
        assert stop.end_processes(procs, grace_s=0.2, term_s=0.5, kill_s=5) == []
        assert not _running(daemon) and not _running(grandchildren[1])  # that one only went with a SIGKILL
        assert _running(other) and _running(started_before) and _running(grandchildren[0])
    finally:
        for proc in (started_before, daemon, other):
            proc.kill()
            proc.wait()
        for pid in grandchildren:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


# A stand-in for the raylet: it starts an "agent" that leaves a mark if it gets a SIGTERM and otherwise ends by itself
# a second later, and it exits when its stdin closes (as ray.shutdown stops the raylet).
_LAUNCHER = """
import subprocess, sys
agent = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; "
                          "signal.signal(signal.SIGTERM, lambda *a: (open(sys.argv[1], 'w').close(), sys.exit(1))); "
                          "time.sleep(1.5)", sys.argv[1]])
print(agent.pid, flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc (Linux)")
def test_processes_that_go_by_themselves_get_no_signal(tmp_path):
    """After ray.shutdown the workers and agents go by themselves within the grace: none gets a signal from us."""
    fake_ray = tmp_path / "ray"
    fake_ray.mkdir()
    (fake_ray / "launcher.py").write_text(_LAUNCHER)
    marker = tmp_path / "signalled"
    before = stop.child_pids()
    launcher = subprocess.Popen([sys.executable, str(fake_ray / "launcher.py"), str(marker)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        agent = int(launcher.stdout.readline())
        procs = stop.ray_processes(before, ray_folder=str(fake_ray) + os.sep)
        assert {pid for pid, _ in procs} == {launcher.pid, agent}
        launcher.stdin.close()  # "ray.shutdown": the launcher goes, its agent is left to end by itself
        launcher.wait(timeout=30)
        assert stop.end_processes(procs, grace_s=20) == []
        assert not _running(agent) and not marker.exists()
    finally:
        launcher.kill()
        launcher.wait()
