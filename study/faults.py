"""What a study does when a worker, a node or the MLflow tracking server goes away.

A node or a trial's worker process dies (on a cluster, `--address`):
- Tune retries the trial from its last checkpoint, `--max-failures` times: by default `CLUSTER_MAX_FAILURES` (3)
  on a cluster and 0 on one machine (`default_max_failures`). On a cluster a lost node or a killed worker is
  usually not the trial's doing (preemption, a node taken away, a neighbour's job); locally a dead worker is almost
  always the trial itself killed for memory (or by you), and it would die again at the same place, so a retry
  would only make the study report it later.
- Tune's `FailureConfig` retries every error alike (Ray 2.60 has no per-error policy: `Trial.should_recover` only
  counts). A trial's own error (an exception its trainable raised) must fail it at once, so the trial records it
  (its MLflow run is set FAILED with an `error` tag from inside the trial, as before) and a retried start of that
  trial that finds it (`earlier_error`) raises `OwnError` at once, before its trainable is called: the trainable
  runs once, and the retries Tune still makes cost a worker start each, no training.
- Each epoch once: a retry goes on from the last checkpoint Tune persisted, and the epoch after it may already
  be in MLflow (logged, then the node died before its checkpoint was persisted). The trial reads its run's last
  logged `epoch` step at start (`last_logged_epoch`) and does not log the steps the run already has.
- The study's searcher hears of a trial once: Tune tells a searcher nothing on a retry (`on_trial_recover` is a
  callback's, and `on_trial_complete` comes once, at the trial's end), and a re-reported epoch is ignored by
  Optuna (its first value is kept), so a retried trial stays one Optuna trial.

The tracking server (`--mlflow-uri http(s)://...`) stops answering:
- MLflow's HTTP client retries a request on its own. Its defaults (7 retries, backoff factor 2, 120 s per
  request) wait about 4 minutes for a refused connection and up to 20 for a server that hangs; the study's
  processes (driver and every worker: `tracking_env`, through Ray's runtime environment) get `TRACKING_ENV`
  instead, unless the user set them: 6 retries, backoff factor 2 (waits of 0, 4, 8, 16, 32 and 64 s between 7
  attempts, each plus up to 1 s of jitter) and 20 s per request. A request gives up after about 126 s of refused
  connections (measured), so a server that is back within about two minutes is ridden out, and one that is gone
  is found in about two minutes.
- A trial whose request gives up keeps trying (`patient`, up to `TRIAL_WAIT_S`): its run is not its failure. The
  driver probes the server every `PROBE_EVERY_S` (`TrackingWatch`, a Tune callback); when a probe gives up too,
  it stops the fit as a Ctrl-C does (Tune saves the experiment; the trials running are resumed by `study resume`
  from their last checkpoints, their Optuna trials still RUNNING), and the study exits `TEMPFAIL_EXIT` (75,
  EX_TEMPFAIL of sysexits.h: a temporary failure, try again later) with one line (`outage_line`). Only a trial
  whose own node cannot reach a server that the driver still reaches waits out `TRIAL_WAIT_S` and then fails
  (`TrackingUnavailable`: a process-level failure that `--max-failures` retries).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from ray import tune

from study.stop import stop_fit_like_ctrl_c

CLUSTER_MAX_FAILURES = 3
TEMPFAIL_EXIT = 75  # sysexits.h EX_TEMPFAIL

# MLflow's documented settings (mlflow.environment_variables), for a remote tracking server.
TRACKING_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
TRIAL_WAIT_S = 600.0   # how long a trial keeps trying a server that does not answer before it fails
PROBE_EVERY_S = 5.0    # the driver's probe of the server while trials run
RETRY_PAUSE_S = 2.0    # between two of a trial's patient tries (each one is MLflow's whole retry sequence)

T = TypeVar("T")


def default_max_failures(given: int | None, address: str | None) -> int:
    """`--max-failures` as given, else CLUSTER_MAX_FAILURES on a cluster and 0 on this machine (see above)."""
    if given is not None:
        return int(given)
    return CLUSTER_MAX_FAILURES if address else 0


# ------------------------------------------------------------------------------------------ a trial's own error
class OwnError(RuntimeError):
    """A retried start of a trial that already failed with an error of its own: raised again at once."""


def earlier_error(info: Any, trial_id: str) -> str | None:
    """The error an earlier attempt of this trial recorded in its MLflow run (status FAILED, an `error` tag), or
    None (a first start, or an attempt whose process died: its run is still RUNNING)."""
    from mlflow.tracking import MlflowClient

    from trainables.names import ERROR_TAG, PARENT_TAG, TRIAL_TAG

    found = MlflowClient(info.uri).search_runs(
        [info.experiment_id],
        filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{PARENT_TAG}` = '{info.parent_run_id}'",
        max_results=1,
    )
    if found and found[0].info.status == "FAILED" and found[0].data.tags.get(ERROR_TAG):
        return found[0].data.tags[ERROR_TAG]
    return None


def raise_earlier_error(info: Any, trial_id: str) -> None:
    error = earlier_error(info, trial_id)
    if error is not None:
        raise OwnError(f"{error} (the trial's own error, recorded by its first attempt: not retried)")


def last_logged_epoch(uri: str, run_id: str) -> int:
    """The last `epoch` step the run has in MLflow (0 for none): a retried trial does not log these again."""
    from mlflow.tracking import MlflowClient

    from trainables.names import EPOCH

    history = MlflowClient(uri).get_metric_history(run_id, EPOCH)
    return max((int(m.step) for m in history), default=0)


# ------------------------------------------------------------------------------------------ the tracking server
class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server did not answer for longer than this process waits."""


def remote(uri: str | None) -> bool:
    return bool(uri) and urlsplit(uri).scheme.lower() in ("http", "https")


def tracking_env(uri: str | None) -> dict[str, str]:
    """The MLflow HTTP settings of the study's processes (the user's own where set, else TRACKING_ENV), also put
    into this process's environment; nothing for a store that is not a server."""
    if not remote(uri):
        return {}
    env = {k: os.environ.get(k, v) for k, v in TRACKING_ENV.items()}
    os.environ.update(env)
    return env


def with_tracking_env(runtime_env: dict | None, uri: str | None) -> dict | None:
    """Ray's runtime environment with `tracking_env(uri)` among its `env_vars`: every worker, on every node."""
    env = tracking_env(uri)
    if not env:
        return runtime_env
    out = dict(runtime_env or {})
    out["env_vars"] = {**env, **(out.get("env_vars") or {})}
    return out


_OUTAGE_TYPES: tuple[type, ...] | None = None


def _outage_types() -> tuple[type, ...]:
    global _OUTAGE_TYPES
    if _OUTAGE_TYPES is None:
        import requests
        import urllib3

        _OUTAGE_TYPES = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                         requests.exceptions.RetryError, requests.exceptions.ChunkedEncodingError,
                         urllib3.exceptions.MaxRetryError, urllib3.exceptions.ProtocolError,
                         ConnectionError, TimeoutError)
    return _OUTAGE_TYPES


def caught() -> tuple[type[BaseException], ...]:
    """What a call to the tracking server raises when it fails: MLflow's own error and the transport's (the
    places that ask `is_outage` catch these, and let every other exception, a bug, propagate)."""
    from mlflow.exceptions import MlflowException

    return (MlflowException, TrackingUnavailable, OSError, *_outage_types())


def is_outage(err: BaseException) -> bool:
    """Whether `err` (or what it was raised from) says the server did not answer, after MLflow's own retries:
    refused or broken connections, timeouts, or only transient error statuses (5xx, 429) until it gave up. A
    server that answered with a refusal (a bad request, a missing run) is not an outage."""
    types = _outage_types()
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, TrackingUnavailable) or isinstance(err, types):
            return True
        if type(err).__name__ == "MlflowException" and "Max retries exceeded" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def patient(call: Callable[..., T], *args: Any, wait_s: float = TRIAL_WAIT_S, **kwargs: Any) -> T:
    """`call(*args, **kwargs)`, tried again while the tracking server does not answer, up to `wait_s` in all; then
    TrackingUnavailable. Meant for calls that may be repeated (a lookup, a batch of metrics at fixed steps, tags,
    a status): the study's driver stops the study long before `wait_s` when the server is gone for it too."""
    started = time.monotonic()
    while True:
        try:
            return call(*args, **kwargs)
        except caught() as err:
            if not is_outage(err):
                raise
            if time.monotonic() - started > wait_s:
                raise TrackingUnavailable(f"the MLflow tracking server did not answer for {wait_s:.0f} s "
                                          f"({type(err).__name__}: {str(err)[:300]})") from err
            time.sleep(RETRY_PAUSE_S)


_outage: str | None = None  # the tracking URI this process found gone (the driver's study then stops)


def mark_outage(uri: str) -> None:
    global _outage
    _outage = _outage or uri


def outage() -> str | None:
    return _outage


def outage_line(uri: str, study_dir: Any, resumable: bool = True) -> str:
    from study.tracking import public_uri

    waited = _request_bound_s()
    then = f"continue with: study resume {study_dir} once it is back" if resumable else \
        "run the study again once it is back"
    return (f"study: the MLflow tracking server at {public_uri(uri)} stopped answering (no answer for about "
            f"{waited:.0f} s); {then}")


def _request_bound_s() -> float:
    """How long one MLflow request waits on a refused connection: its backoff sleeps and their jitter."""
    try:
        retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7"))
        factor = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2"))
        jitter = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "1.0"))
    except ValueError:
        return 0.0
    return sum(min(120.0, factor * 2 ** (k - 1)) + jitter / 2 for k in range(2, retries + 1))


class _NotThisThread(logging.Filter):
    """Drops urllib3's "Retrying ..." warnings of the driver's probe thread (the probe's verdict is what counts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not threading.current_thread().name.startswith("study-tracking-probe")


class TrackingWatch(tune.Callback):
    """Driver side, while a part's trials run: probe the tracking server every `every_s` in a thread of its own;
    when a probe gives up (MLflow's bounded retries: no answer for about two minutes), or another driver call
    found the server gone (`mark_outage`), stop the fit the way a Ctrl-C does, so that `study resume` continues
    the trials that were running. Pickled with the experiment: it holds plain values only."""

    def __init__(self, uri: str, experiment_id: str, every_s: float = PROBE_EVERY_S):
        self.uri, self.experiment_id, self.every_s = uri, experiment_id, float(every_s)
        self._reset()

    def _reset(self) -> None:
        self._thread: threading.Thread | None = None
        self._last = 0.0
        self._stopping = False

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "experiment_id": self.experiment_id, "every_s": self.every_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._stopping:
            return
        if outage() is not None:
            self._stop_fit()
            return
        now = time.monotonic()
        if (self._thread is None or not self._thread.is_alive()) and now - self._last >= self.every_s:
            self._last = now
            self._thread = threading.Thread(target=self._probe, name="study-tracking-probe", daemon=True)
            self._thread.start()

    def _probe(self) -> None:
        from mlflow.tracking import MlflowClient

        try:
            MlflowClient(self.uri).get_experiment(self.experiment_id)
        except caught() as err:  # an answer that is an error (auth, a bad id) is still an answer
            if is_outage(err):
                mark_outage(self.uri)

    def _stop_fit(self) -> None:
        """Stop the fit as a Ctrl-C does (study.stop): the running trials stay resumable."""
        self._stopping = True
        if not stop_fit_like_ctrl_c():
            raise TrackingUnavailable(f"the MLflow tracking server at {self.uri} stopped answering")


logging.getLogger("urllib3.connectionpool").addFilter(_NotThisThread())


def watch_callbacks(uri: str, experiment_id: str) -> list:
    """A part's `TrackingWatch` where the tracking URI is a server; none for a store of files or a database."""
    return [TrackingWatch(uri, experiment_id)] if remote(uri) else []


def close_leftover_runs(info: Any, part: str, results: list, epochs: int) -> int:
    """Runs of this part's finished trials still RUNNING in MLflow: their close was lost with the server (the
    driver closes a run that ASHA stopped; a resumed study never hears of that trial again). Closed here, after
    a fit that ran to its end; returns how many."""
    from mlflow.tracking import MlflowClient

    from study import tracking
    from trainables.names import ERROR_TAG, PART_TAG, PARENT_TAG, STOPPED_TAG, TRIAL_TAG

    done = {}
    for r in results:
        trial_id = (r.metrics or {}).get("trial_id")
        if trial_id:
            done[trial_id] = r
    if not done:
        return 0
    client = MlflowClient(info.uri)
    running = client.search_runs(
        [info.experiment_id], max_results=10000,
        filter_string=f"tags.`{PARENT_TAG}` = '{info.parent_run_id}' and tags.`{PART_TAG}` = '{part}' "
                      "and attributes.status = 'RUNNING'")
    closed = 0
    for run in running:
        result = done.get(run.data.tags.get(TRIAL_TAG))
        if result is None:
            continue
        if result.error is not None:
            tracking.end_trial(info.uri, run.info.run_id, "FAILED",
                               tags={ERROR_TAG: "trial process failed (see the Ray trial error file)"})
        else:
            ran = int((result.metrics or {}).get("training_iteration", 0))
            tags = {STOPPED_TAG: f"scheduler stopped it after {ran} of {epochs} epochs"} if ran < epochs else None
            tracking.end_trial(info.uri, run.info.run_id, "FINISHED", tags=tags)
        closed += 1
    return closed
