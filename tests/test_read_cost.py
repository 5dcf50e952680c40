"""Reading a study from a tracking server costs the same number of HTTP requests at any number of trials.

Studies of a formula plugin (`study.bench.read_workload`: three epochs of arithmetic a trial, 2 trials at a time)
are logged to a real `mlflow server` on 127.0.0.1; `study show --mlflow-uri` then reads each one through a small
counting reverse proxy on 127.0.0.1 (a threaded http.server that forwards every request to the server and keeps
its method and path). A read that asks the server once per trial, or once per trial and metric, makes more
requests for the larger study and fails here.

The default run compares a 3- and a 15-trial study (about a minute, most of it the two `study run`s); the slow
one compares 10 and 200 trials, as the issue asked (a 200-trial study takes minutes to make on 2 cores).
"""
from __future__ import annotations

import collections
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from process_group import stop_group

from study.bench.read_workload import PLUGIN, PLUGIN_MODULE, STUDY_FILE

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# Headers that belong to one hop, not to the request or answer the proxy passes on.
HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """The base URL of a fresh `mlflow server` (its own SQLite store, proxied artefacts, one worker); it and its
    workers (a process group of its own) are stopped afterwards."""
    tmp = tmp_path_factory.mktemp("read-cost-server")
    port = _free_port()
    log = tmp / "mlflow-server.log"
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", HOST, "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'srv.db'}",
           "--serve-artifacts", "--artifacts-destination", (tmp / "artifacts").as_uri(),
           "--default-artifact-root", "mlflow-artifacts:/"]
    base = f"http://{HOST}:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.read().strip() == b"OK":
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.time() > deadline:
                raise AssertionError(f"mlflow server not healthy after 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        stop_group(proc, term_s=15)


class CountingProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to `upstream` (host, port) as it came and keeps (method, path) of each, in order."""

    daemon_threads = True

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__((HOST, 0), _Forward)
        self.upstream = upstream
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"

    def take(self) -> list[tuple[str, str]]:
        """The requests seen since the last call."""
        with self.lock:
            seen, self.seen = self.seen, []
        return seen


class _Forward(http.server.BaseHTTPRequestHandler):
    server: CountingProxy

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        with self.server.lock:
            self.server.seen.append((self.command, self.path.split("?", 1)[0]))
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=120)
        try:
            conn.request(self.command, self.path, body=body,
                         headers={k: v for k, v in self.headers.items() if k.lower() not in HOP})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's own signature
        pass  # the count is the record; no line per request on stderr


@pytest.fixture(scope="module")
def proxy(mlflow_server):
    host, port = mlflow_server.removeprefix("http://").split(":")
    server = CountingProxy((host, int(port)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def make_study(server: str, folder: Path, n: int) -> str:
    """An n-trial study of the formula plugin logged to `server` (2 trials at a time); its name."""
    project = folder / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / f"{PLUGIN_MODULE}.py").write_text(PLUGIN)
    name = f"read-cost-{n}"
    study_file = project / f"{name}.toml"
    study_file.write_text(STUDY_FILE.format(n=n, module=PLUGIN_MODULE))
    log = folder / f"{name}.log"
    t0 = time.perf_counter()
    with open(log, "w") as out:  # a file, not a pipe: the progress lines could fill a pipe
        proc = subprocess.run([sys.executable, "-m", "study", "run", str(study_file), "--storage",
                               str(folder / "studies"), "--name", name, "--mlflow-uri", server,
                               "--max-concurrent", "2"], cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                              timeout=1800)
    assert proc.returncode == 0, log.read_text()[-4000:]
    summary = json.loads((folder / "studies" / name / "summary.json").read_text())[-1]
    assert summary["trials"] == n and summary["errored"] == 0, summary
    print(f"{n}-trial study on the server made in {time.perf_counter() - t0:.0f} s")
    return name


def show_requests(proxy: CountingProxy, name: str, n: int, cwd: Path) -> list[tuple[str, str]]:
    """`study show NAME --mlflow-uri PROXY` as a user runs it (from a folder with no study folders, so the
    server is all it reads); the requests it made."""
    proxy.take()
    proc = subprocess.run([sys.executable, "-m", "study", "show", name, "--mlflow-uri", proxy.url, "--json"],
                          cwd=cwd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    seen = proxy.take()
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = json.loads(proc.stdout)
    part = shown["parts"]["formula"]
    # it read every trial: the counts by state add up to the study's trials
    assert sum(part["states"].values()) == n, part["states"]
    assert seen, "study show made no request through the proxy: the count would prove nothing"
    return seen


def assert_same_requests(proxy: CountingProxy, server: str, folder: Path, small: int, large: int) -> None:
    names = {n: make_study(server, folder, n) for n in (small, large)}
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir()
    seen = {n: show_requests(proxy, names[n], n, elsewhere) for n in (small, large)}
    counts = {n: collections.Counter(f"{m} {p}" for m, p in s) for n, s in seen.items()}
    print({n: len(s) for n, s in seen.items()}, "requests;", {n: dict(c) for n, c in counts.items()})
    assert len(seen[small]) == len(seen[large]), (
        f"study show made {len(seen[small])} requests for {small} trials and {len(seen[large])} for {large}: "
        f"{small} trials {dict(counts[small])}, {large} trials {dict(counts[large])}")


def test_the_proxy_counts_what_passes_through_it(proxy) -> None:
    """The proxy itself: every request is forwarded and answered as the server answers, and counted once."""
    proxy.take()
    with urllib.request.urlopen(f"{proxy.url}/health", timeout=30) as resp:
        assert resp.read().strip() == b"OK"
    req = urllib.request.Request(f"{proxy.url}/api/2.0/mlflow/experiments/search", method="POST",
                                 data=json.dumps({"max_results": 10}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert "experiments" in json.loads(resp.read())
    with pytest.raises(urllib.error.HTTPError) as err:  # an error answer passes through as it is
        urllib.request.urlopen(f"{proxy.url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=none", timeout=30)
    assert err.value.code == 404
    assert proxy.take() == [("GET", "/health"), ("POST", "/api/2.0/mlflow/experiments/search"),
                            ("GET", "/api/2.0/mlflow/experiments/get-by-name")]


def test_show_makes_as_many_requests_for_15_trials_as_for_3(proxy, mlflow_server, tmp_path) -> None:
    assert_same_requests(proxy, mlflow_server, tmp_path, 3, 15)


@pytest.mark.slow
def test_show_makes_as_many_requests_for_200_trials_as_for_10(proxy, mlflow_server, tmp_path) -> None:
    assert_same_requests(proxy, mlflow_server, tmp_path, 10, 200)
