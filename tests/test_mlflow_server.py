"""A study logging to a real `mlflow server` (the cluster setup of the README), checked through its REST API only.

The server runs on 127.0.0.1 on a free port with its own SQLite store and its own proxied artifact folder
(`--serve-artifacts`, so trials upload their files through HTTP as they would from another node). Nothing here
reads the server's SQLite file or artifact folder directly: every check is a request to the server.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from process_group import stop_group

from study.studyfile import preset_part

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _get(base: str, path: str, params: dict | None = None, timeout: float = 30) -> bytes:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def _api(base: str, endpoint: str, params: dict | None = None, body: dict | None = None) -> dict:
    """GET (params) or POST (body) on /api/2.0/mlflow/<endpoint>; the JSON answer."""
    url = f"{base}/api/2.0/mlflow/{endpoint}"
    if body is None:
        return json.loads(_get(base, f"/api/2.0/mlflow/{endpoint}", params))
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture
def mlflow_server(tmp_path):
    """(base URL, artifact folder) of a fresh `mlflow server`; stopped, with all its workers, afterwards."""
    port = _free_port()
    artifacts = tmp_path / "srv-artifacts"
    log = tmp_path / "mlflow-server.log"
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    cmd = [mlflow_bin, "server", "--host", HOST, "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
           "--serve-artifacts", "--artifacts-destination", artifacts.as_uri(),
           "--default-artifact-root", "mlflow-artifacts:/"]
    base = f"http://{HOST}:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if _get(base, "/health", timeout=2).strip() == b"OK":
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.time() > deadline:
                raise AssertionError(f"mlflow server not healthy after 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, artifacts
    finally:
        stop_group(proc, term_s=15)


def test_study_logs_to_mlflow_server(real_data_dir, tmp_path, mlflow_server):
    base, artifacts = mlflow_server
    storage = tmp_path / "studies"
    run_log = tmp_path / "study.log"
    with open(run_log, "w") as out:  # a file, not a pipe: the progress table could fill a pipe
        proc = subprocess.run([sys.executable, "-m", "study", "run", "covid", "--preset", "smoke",
                               "--storage", str(storage), "--name", "srv", "--mlflow-uri", base],
                              cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=600)
    text = run_log.read_text()
    assert proc.returncode == 0, text[-4000:]
    # the study did not fall back to a local store
    assert not (storage / "srv" / "mlflow.db").exists()

    exp = _api(base, "experiments/get-by-name", {"experiment_name": "srv"})["experiment"]
    assert exp["artifact_location"].startswith("mlflow-artifacts:"), exp
    runs: list[dict] = []
    token = None
    while True:
        body = {"experiment_ids": [exp["experiment_id"]], "max_results": 1000}
        if token:
            body["page_token"] = token
        page = _api(base, "runs/search", body=body)
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            break

    def tags(run):
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    def params(run):
        return {p["key"]: p["value"] for p in run["data"].get("params", [])}

    parents = [r for r in runs if "mlflow.parentRunId" not in tags(r)]
    assert len(parents) == 1, [r["info"]["run_name"] for r in parents]
    parent = parents[0]
    parent_id = parent["info"]["run_id"]
    assert parent["info"]["status"] == "FINISHED"
    assert tags(parent)["study.kind"] == "covid" and tags(parent)["study.preset"] == "smoke"
    pp = params(parent)
    assert pp["target"] == "covid" and pp["preset"] == "smoke" and pp["name"] == "srv"
    assert pp["mlflow_uri"] == base
    part = preset_part("smoke", "covid")
    assert pp["covid.trials"] == str(part.total_trials)

    children = [r for r in runs if tags(r).get("mlflow.parentRunId") == parent_id]
    assert len(children) == len(runs) - 1  # every other run is nested under the study's run
    trials = [r for r in children if tags(r).get("trainable") == "covid"]
    assert len(trials) == part.total_trials, sorted(tags(r).get("trainable") for r in children)
    # the rest are the baselines logged after the trials
    assert all(tags(r).get("trainable") == "baseline" for r in children if r not in trials)
    assert all(r["info"]["status"] == "FINISHED" for r in trials)
    assert {"cell", "seq_len", "hidden_size", "lr", "epochs"} <= set(params(trials[0]))

    # per-epoch history: a fixed run always trains the preset's full epochs (ASHA never stops one)
    fixed = next(r for r in trials if tags(r).get("group") == "fixed")
    run_id = fixed["info"]["run_id"]
    history = _api(base, "metrics/get-history", {"run_id": run_id, "metric_key": "val_acc"})["metrics"]
    epochs = int(params(fixed)["epochs"])
    assert sorted(m["step"] for m in history) == list(range(1, epochs + 1)), history
    assert all(0.0 <= m["value"] <= 1.0 for m in history)

    # artefacts: listed and downloaded through the server (both its download routes)
    listed = _api(base, "artifacts/list", {"run_id": run_id, "path": "results"})
    names = {f["path"] for f in listed.get("files", [])}
    assert {"results/summary.json", "results/predictions.json", "results/confusion.json"} <= names, listed
    raw = _get(base, "/get-artifact", {"path": "results/summary.json", "run_uuid": run_id})
    summary = json.loads(raw)
    assert isinstance(summary, dict) and summary, raw[:500]
    root = fixed["info"]["artifact_uri"]
    assert root.startswith("mlflow-artifacts:/"), root
    proxied = root[len("mlflow-artifacts:"):].lstrip("/")
    assert json.loads(_get(base, f"/api/2.0/mlflow-artifacts/artifacts/{proxied}/results/summary.json")) == summary
    # the parent run's own files, too
    parent_files = {f["path"] for f in _api(base, "artifacts/list", {"run_id": parent_id}).get("files", [])}
    assert {"search_space.json", "study_summary.json"} <= parent_files, parent_files

    # the same study through the analysis API and `study show`, from the server alone
    from analysis import open_study

    study = open_study("srv", tracking_uri=base)
    assert sorted(study.trials.trial_id) == sorted(tags(r)["ray.trial_id"] for r in trials)
    assert study.trials.val_acc.notna().all() and study.trials.seq_len.dtype.kind == "i"
    assert study.chosen("covid")["baselines"].shape[0] > 0
    shown = subprocess.run([sys.executable, "-m", "study", "show", "srv", "--mlflow-uri", base, "--json"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert json.loads(shown.stdout)["parts"]["covid"]["chosen"]["trial_id"] == study.chosen("covid")["trial"].trial_id
