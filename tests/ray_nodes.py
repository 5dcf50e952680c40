"""Ray nodes that a test starts with `ray start` and stops again, without touching any other Ray on the machine.

`ray stop --force` kills every Ray process of the machine, a developer's running study included. Here each node
is `ray start --block` in a process group of its own: the group is signalled at the end, and only its processes
(the command, its GCS, raylet and workers) go.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from process_group import stop_group

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@dataclass
class Cluster:
    """The nodes `ray_cluster` started: the head's GCS port, and each node's `ray start` process (the leader of its
    own process group), the head first."""

    port: int
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def kill_worker(self, i: int = 0) -> None:
        """SIGKILL to worker node i's whole process group (its raylet, its workers): the node dies at once."""
        proc = self.procs[1 + i]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def node_ids(self) -> dict[str, str]:
        """{"head": id, "workers": comma-joined ids} of the nodes alive now (the head holds Ray's
        `node:__internal_head__` resource)."""
        code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                "nodes=[n for n in ray.nodes() if n['Alive']]; "
                "print(','.join(n['NodeID'] for n in nodes if 'node:__internal_head__' in n['Resources'])); "
                "print(','.join(n['NodeID'] for n in nodes if 'node:__internal_head__' not in n['Resources']))")
        out = subprocess.run([sys.executable, "-c", code, f"127.0.0.1:{self.port}"], env=self.env,
                             capture_output=True, text=True, timeout=120, check=True)
        head, workers = (out.stdout.strip().splitlines() + ["", ""])[:2]
        return {"head": head, "workers": workers}


@contextmanager
def ray_nodes(env: dict[str, str], cpus: int = 1, workers: int = 0, log_dir: Path | None = None) -> Iterator[int]:
    """A head node on 127.0.0.1 (and `workers` more nodes joined to it); yields the head's GCS port."""
    with ray_cluster(env, cpus, workers, log_dir) as cluster:
        yield cluster.port


@contextmanager
def ray_cluster(env: dict[str, str], cpus: int = 1, workers: int = 0,
                log_dir: Path | None = None) -> Iterator[Cluster]:
    """`ray_nodes`, yielding the `Cluster` (its port, and a way to kill a worker node mid-study)."""
    port = free_port()
    common = ["--num-cpus", str(cpus), "--disable-usage-stats", "--node-ip-address", "127.0.0.1", "--block"]
    procs: list[subprocess.Popen] = []
    logs = []
    cluster = Cluster(port, env, procs)

    def start(args: list[str], name: str) -> None:
        log = open(log_dir / f"{name}.log", "wb") if log_dir else subprocess.DEVNULL
        if log_dir:
            logs.append(log)
        procs.append(subprocess.Popen([RAY, "start", *args, *common], env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))

    try:
        start(["--head", "--port", str(port), "--include-dashboard", "false"], "head")
        deadline = time.monotonic() + 120
        while not _answers(port):
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start --head did not come up on port {port}")
            time.sleep(0.5)
        for i in range(workers):
            start(["--address", f"127.0.0.1:{port}"], f"worker{i}")
        if workers:
            _wait_for_nodes(port, 1 + workers, env)
        yield cluster
    finally:
        for proc in reversed(procs):
            stop_group(proc)
        for log in logs:
            log.close()


def _wait_for_nodes(port: int, n: int, env: dict[str, str], timeout: float = 120) -> None:
    """Until the cluster lists n alive nodes (a worker joins some seconds after its command started)."""
    code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", code, f"127.0.0.1:{port}"], env=env, capture_output=True,
                             text=True, timeout=120)
        if out.returncode == 0 and out.stdout.strip().isdigit() and int(out.stdout.strip()) >= n:
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster on port {port} did not reach {n} nodes")
