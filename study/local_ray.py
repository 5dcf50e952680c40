"""The study's Ray: a private local instance (loopback only, token auth on), or a cluster joined on purpose.

Why each setting of a local study:
- `RAY_AUTH_MODE=token` with a fresh random token in a 0600 file of a 0700 temp folder (`RAY_AUTH_TOKEN_PATH`):
  every Ray RPC and HTTP entry point wants that token, so another process or user of the machine cannot run
  code as the study's user. The token is never in the environment or a log (only its path is), is not
  written into the user's home (`~/.ray/auth_token` is Ray's default), and is deleted with its folder when
  the study's Ray shuts down.
- `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`: Ray's single-node mode (its default on macOS and Windows). The node IP
  is then 127.0.0.1, and Ray 2.60 binds its GCS, raylet, object manager, workers and agents to the node IP;
  otherwise it takes the machine's address and listens on every interface.
- `address="local"` with `$RAY_ADDRESS` removed: `ray.init()` would otherwise join a cluster that
  `ray start --head` left on the machine (or whatever `$RAY_ADDRESS` names); joining is always explicit
  (`--address`).
- No dashboard: nothing of it is used, and it is one more listening server.

When Ray reads them (public means only, no reload of Ray's internals):
- `RAY_AUTH_MODE` and `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` are read once per process, when `ray` is first imported
  (its constants and its C++ config). So both must be in `os.environ` before anything imports ray:
  `local_environment()` sets them (and removes `LOCAL_ENV_REMOVED`) for the `with` block, and a command that may
  start a local Ray enters it first thing, before importing the modules that import ray. `local_ray()` enters it
  too, and refuses with a RuntimeError when ray was already imported outside it: such a Ray would take the
  machine's address (every interface), and a driver not in token mode is refused by its own GCS.
- Every study driver, local or on a cluster, imports ray with `RAY_DISABLE_FAILURE_SIGNAL_HANDLER=1` set for the
  import only (`import_ray_as_driver`, DRIVER_IMPORT_ENV): its core worker then installs no C++ failure-signal
  handler, whose stack dump was all a SIGTERM landing inside ray.init printed (study.stop).
- The token is read at the process's first ray.init and kept for the life of the process. A second local Ray in
  the same process would get a fresh token that the driver never reads: `local_ray()` refuses it (RuntimeError),
  and each local study runs in a process of its own (`study run`/`resume` are one study each; `study bench` runs
  each study workload in a child process).
- After `ray.init`, the node's and the GCS's addresses (public: the runtime context and `ray.nodes()`) must be
  loopback, else Ray goes down at once with a RuntimeError.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from data.errors import DataError
from study import stop

# What a local study sets in its own process (Ray's processes inherit it) and removes, from before ray is imported
# until the command is done (`local_environment`).
LOCAL_ENV = {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
LOCAL_ENV_REMOVED = ("RAY_ADDRESS", "RAY_AUTH_TOKEN")
TOKEN_FILE = "auth_token"
# Set only while this process imports ray (Ray reads it then, into its constants), for a study's driver, local or
# on a cluster: its core worker installs no C++ failure-signal handler, whose "*** SIGTERM received ***" stack dump
# is what a SIGTERM landing inside ray.init printed (study.stop); Python's faulthandler, which ray.init enables,
# still reports a crash. Ray's own processes, started later, do not inherit it and keep their handler. A value the
# user set is kept.
DRIVER_IMPORT_ENV = {"RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"}
# Inside local_environment(): whether ray was first imported in this process with LOCAL_ENV set (None outside).
_imported_with_local_env: bool | None = None
# Whether this process has run a ray.init (its driver then holds that Ray's token for good).
_ray_started = False
# HTTP/2 connection preface and an empty SETTINGS frame: a gRPC server (a Ray GCS) answers with a SETTINGS frame.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_H2_SETTINGS = 4


class RayUnavailable(DataError):
    """The cluster cannot be used (not Ray, refused our token, or too small); one line, exit 2."""

    def __init__(self, problem: str, address: str | None = None):
        super().__init__(f"--address {address}: {problem}" if address else problem)


def write_token(folder: Path) -> Path:
    """A new 256-bit token in a file only this user can read (created exclusively: never an existing file)."""
    path = folder / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return path


@contextmanager
def _environment(set_vars: dict[str, str], removed: tuple[str, ...]) -> Iterator[None]:
    """Ray reads these from the environment of the driver and of every process it starts; put back afterwards
    so that a caller in the same process (the benchmark, tests) sees its own environment again."""
    saved = {k: os.environ.get(k) for k in (*set_vars, *removed)}
    for k in removed:
        os.environ.pop(k, None)
    os.environ.update(set_vars)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def import_ray_as_driver() -> None:
    """Import ray for a study's driver, with DRIVER_IMPORT_ENV set for the import only; nothing if it is already
    imported."""
    if "ray" in sys.modules:
        return
    with _environment({k: os.environ.get(k, v) for k, v in DRIVER_IMPORT_ENV.items()}, ()):
        import ray  # noqa: F401


@contextmanager
def local_environment() -> Iterator[None]:
    """LOCAL_ENV set and LOCAL_ENV_REMOVED removed for the `with` block (put back afterwards, for a caller in the
    same process: tests, the benchmark); enter it before anything imports ray (see the module docstring).

    Whether Ray will see it is decided here: yes when ray is not imported yet (or an enclosing block decided yes);
    `local_ray()` refuses to start otherwise."""
    global _imported_with_local_env
    outer = _imported_with_local_env
    seen = ("ray" not in sys.modules) if outer is None else outer
    with _environment(LOCAL_ENV, LOCAL_ENV_REMOVED):
        _imported_with_local_env = seen
        try:
            import_ray_as_driver()
            yield
        finally:
            _imported_with_local_env = outer


@contextmanager
def _cluster_environment() -> Iterator[None]:
    import_ray_as_driver()
    yield


def study_environment(address: str | None):
    """What a study command enters first thing: `local_environment()` for a local study; for a cluster, only
    ray imported as a driver (DRIVER_IMPORT_ENV): it joins with the caller's own settings."""
    return _cluster_environment() if address else local_environment()


@contextmanager
def local_ray(num_cpus: int | None = None, runtime_env: dict | None = None) -> Iterator[dict[str, float]]:
    """Start a private local Ray (see the module docstring); yield its resources; always shut it down."""
    global _ray_started
    with local_environment():
        if not _imported_with_local_env:
            raise RuntimeError(
                "study.local_ray: ray was imported in this process before the local study's environment was set "
                f"({', '.join(f'{k}={v}' for k, v in LOCAL_ENV.items())}); Ray reads it once, at import, and would "
                "listen on every interface. Enter study.local_ray.local_environment() before anything imports ray.")
        if _ray_started:
            raise RuntimeError(
                "study.local_ray: this process has already started a Ray; its driver keeps that Ray's auth token "
                "for good, so a local study with a fresh token needs a process of its own.")
        import ray

        token_dir = Path(tempfile.mkdtemp(prefix="study-ray-"))  # 0700
        children = stop.child_pids()  # none of them is Ray's (see stop.ray_processes)
        try:
            token = write_token(token_dir)
            # A SIGTERM is a Ctrl-C for Ray's life (study.stop), also where no `study` command set that up.
            with _environment({"RAY_AUTH_TOKEN_PATH": str(token)}, ()), stop.sigterm_as_ctrl_c():
                _ray_started = True
                clean = False
                try:
                    with stop.starting_ray():
                        ray.init(address="local", include_dashboard=False, log_to_driver=True, num_cpus=num_cpus,
                                 runtime_env=runtime_env)
                    stop.take_back_sigterm()  # ray.init put in its own handlers (a C++ stack dump)
                    _check_loopback(ray)
                    yield ray.cluster_resources()
                    clean = True
                except SystemExit as err:  # Ray's own SIGTERM handler, in force while ray.init runs
                    if not stop.was_sigterm(err):
                        raise
                    raise KeyboardInterrupt from None
                finally:
                    # Ray's processes, taken while the raylet is still their parent; made sure gone after
                    # ray.shutdown, which knows none of them if a SIGTERM stopped ray.init half-way (study.stop).
                    with stop.ending():
                        ours = stop.ray_processes(children)
                        try:
                            _shutdown(wait_for_actors=clean)
                        finally:
                            stop.end_processes(ours)
        finally:
            shutil.rmtree(token_dir, ignore_errors=True)


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _check_loopback(ray) -> None:
    """The local Ray's node and GCS are on 127.0.0.1 (Ray binds its servers to the node's address)."""
    hosts = [ray.get_runtime_context().gcs_address.rsplit(":", 1)[0]]
    hosts += [node["NodeManagerAddress"] for node in ray.nodes()]
    wrong = sorted({h for h in hosts if not _is_loopback(h)})
    if wrong:
        raise RuntimeError(f"study.local_ray: the local Ray took the address {', '.join(wrong)}, not 127.0.0.1 "
                           "(it was shut down at once)")


def _shutdown(wait_for_actors: bool, actors_timeout: float = 10.0) -> None:
    """`ray.shutdown()` once the study's actors have exited.

    Tune ends its trial actors (kept for reuse) without waiting for them; one still exiting when Ray shuts down
    gets a SIGTERM, and Ray's worker prints a `sigterm_handler ... SystemExit: 1` traceback through the driver's
    log even after a clean study. An actor holds its CPU until its process is gone, so waiting (bounded) until
    every CPU of the study's private Ray is free again avoids that; on an error or an interrupt Ray goes down at
    once. (On a cluster `cluster_ray` only disconnects: other jobs' CPUs are not ours to wait for.)
    """
    import time

    import ray

    if wait_for_actors and ray.is_initialized():
        deadline = time.monotonic() + actors_timeout
        while time.monotonic() < deadline:
            if ray.available_resources().get("CPU", 0.0) >= ray.cluster_resources().get("CPU", 0.0):
                break
            time.sleep(0.2)
    ray.shutdown()


@contextmanager
def cluster_ray(address: str, runtime_env: dict | None = None) -> Iterator[dict[str, float]]:
    """Join the cluster at `address` with the caller's own auth settings; yield its resources; disconnect."""
    global _ray_started
    import ray

    check_ray_address(address)
    _ray_started = True
    try:
        with stop.starting_ray():
            ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
    except ConnectionError as err:
        cause = str(err.__cause__ or err)
        if "auth" in cause.lower() or os.environ.get("RAY_AUTH_MODE", "") != "token":
            raise RayUnavailable(
                "the cluster did not accept this driver; a cluster with token auth needs RAY_AUTH_MODE=token "
                "and its token in RAY_AUTH_TOKEN_PATH (or ~/.ray/auth_token) here as on every node", address) from None
        raise RayUnavailable(f"could not join the Ray cluster ({cause})", address) from None
    stop.take_back_sigterm()  # ray.init put in its own handlers (a C++ stack dump); see study.stop
    clean = False
    try:
        yield ray.cluster_resources()
        clean = True
    finally:
        _shutdown(wait_for_actors=clean)


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on an address where no Ray cluster answers, instead of Ray's retry loop (over 600 s).

    A Ray GCS speaks gRPC: sent the HTTP/2 preface, it answers with a SETTINGS frame. A closed port, an
    HTTP/1 server or any other service does not. `auto` and `local` name no port and are left to Ray.
    """
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise RayUnavailable("not HOST:PORT", address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_H2_PREFACE)
            head = _read(conn, 9)
    except OSError as err:
        raise RayUnavailable(f"no Ray cluster answers there ({err.strerror or err})", address) from None
    if len(head) < 9 or head[3] != _H2_SETTINGS:
        raise RayUnavailable("something answers there, but not a Ray cluster (no gRPC server)", address)


def _read(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def check_resources(resources: dict[str, float], cpus_per_trial: float, gpus_per_trial: float, where: str) -> None:
    """A trial that asks for more than the whole cluster has would wait forever; say so at once instead."""
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if gpus_per_trial > gpus:
        raise RayUnavailable(f"--gpus-per-trial {gpus_per_trial:g} but {where} has {gpus:g} GPUs", None)
    if cpus_per_trial > cpus:
        raise RayUnavailable(f"--cpus-per-trial {cpus_per_trial:g} but {where} has {cpus:g} CPUs", None)
