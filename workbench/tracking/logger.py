"""``DurableMLflowLogger``: Lightning's MLFlowLogger that keeps a run's record whole.

The logger keeps a run's record whole through what goes wrong around training:

* The store unreachable mid-run (server down, network, sqlite locked by another run): training goes on.
  A call that fails for a reason that may pass is kept in memory (bounded) and appended to the spool
  file ``mlflow-spool.jsonl`` in the run directory, and a background thread resends what is kept, in
  order, until the store answers. The first failing call waits for MLflow's own HTTP retries
  (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``), later ones do not wait.
  At the end of the run whatever is still unsent stays in the spool and the logger prints the
  ``workbench tracking sync`` command that sends it (workbench.tracking.spool).
* The spool's disk full (ENOSPC, EDQUOT): the records already spooled stay whole (workbench.tracking.spool);
  training goes on, the calls that could not be written are kept in memory (bounded by ``max_buffered``) and
  written, in order, once an append succeeds again. One line says so when it starts; the end of the run says how
  many calls reached neither the store nor the spool.
* A resume from a checkpoint (``resume_run_id``, set by the CLI from the checkpoint): the run goes on
  in the same MLflow run. Steps between the checkpoint and the interruption are trained again and
  would log their metrics twice; the logger skips (metric, step) values the run already holds, so
  each keeps its first value. Params the run has are not logged again (MLflow params cannot change).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from workbench.common import DiskFull, first_line, free_bytes
from workbench.tracking import spool as tracking_spool
from workbench.tracking.spool import is_transient
from workbench.tracking.store import open_store, resolve_tracking_uri

RESUMED_FROM_STEP_TAG = "workbench.resumed_from_step"
RESUMED_FROM_RUN_TAG = "workbench.resumed_from_run"
MAX_RETRY_INTERVAL_S = 300.0


class DurableMLflowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger on the local sqlite store by default, continuing runs across resumes and
    buffering through store outages (see the module doc).

    Args:
        resume_run_id: continue this run if the store has it (the CLI sets it from ``--ckpt_path``);
            otherwise a new run starts, tagged ``workbench.resumed_from_run``.
        resume_step: the checkpoint's global step, recorded as the tag ``workbench.resumed_from_step``.
        max_buffered: logging calls kept in memory while the store is unreachable; older ones are then
            only in the spool file (``workbench tracking sync`` sends them).
        retry_interval_s: first wait before resending to an unreachable store (doubling to 5 minutes).
    """

    def __init__(self, experiment_name: str = "workbench", run_name: str | None = None,
                 tracking_uri: str | None = None, tags: dict | None = None, run_id: str | None = None,
                 artifact_location: str | None = None, resume_run_id: str | None = None,
                 resume_step: int | None = None, max_buffered: int = 10_000, retry_interval_s: float = 5.0):
        open_store(resolve_tracking_uri(tracking_uri))
        super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=resolve_tracking_uri(tracking_uri),
                         tags=tags, run_id=run_id, artifact_location=artifact_location)
        self._resume_run_id, self.resume_step = resume_run_id, resume_step
        self._max_buffered, self._retry_interval_s = max_buffered, retry_interval_s
        self._existing_params: dict[str, str] = {}
        self._already_logged: Counter = Counter()  # (key, step) -> values the continued run holds
        self._pending: deque[dict] = deque()  # calls not yet delivered, oldest first
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._resending = False  # a resend thread runs (set and cleared under the lock)
        self._refused = 0  # kept calls the store refused for good (still in the spool)
        self._stop = threading.Event()
        self._dropped = 0  # calls pushed out of memory by max_buffered (still in the spool)
        self._spooled = False
        self._unspooled: deque[dict] = deque()  # kept calls not in the spool file yet (its disk was full)
        self._unspooled_lost = 0  # calls that reached neither the store nor the spool (pushed out of memory)
        self._spool_full = False  # the last spool append met a full disk
        self.spool_path: Path | None = None  # set to <run dir>/mlflow-spool.jsonl by RunSetup
        self.resumed = False

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    # -- the run ---------------------------------------------------------------------------------
    @property
    @rank_zero_experiment
    def experiment(self):
        """The ``MlflowClient``; the run is created (or continued) on first use."""
        if not self._initialized:
            attempts = 8 if self._tracking_uri.startswith("sqlite:") else 1
            for attempt in range(attempts):
                try:
                    self._start_run()
                    break
                except Exception as e:  # noqa: BLE001 - transient ones retried, the rest re-raised
                    if not is_transient(e):
                        raise
                    if attempt == attempts - 1:
                        raise RuntimeError(
                            f"MLflow store {self._tracking_uri} unreachable: {first_line(e)}. Start it (or fix the URI), "
                            "or log to a local store with --trainer.logger.init_args.tracking_uri sqlite:///mlflow.db"
                        ) from e
                    time.sleep(min(0.2 * 2**attempt, 3.0))  # another run creating the sqlite store or writing
        return self._mlflow_client

    def _start_run(self) -> None:
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        client = self._mlflow_client
        mlflow.set_tracking_uri(self._tracking_uri)
        run = None
        if self._run_id is None and self._resume_run_id is not None:
            try:
                run = client.get_run(self._resume_run_id)
                self.resumed = True
            except MlflowException as e:
                if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                rank_zero_warn(f"the checkpoint's MLflow run {self._resume_run_id} is not in {self._tracking_uri}: "
                               "starting a new run")
                self.tags = {**(self.tags or {}), RESUMED_FROM_RUN_TAG: self._resume_run_id}
        elif self._run_id is not None:
            run = client.get_run(self._run_id)
        if run is not None:
            self._run_id, self._experiment_id = run.info.run_id, run.info.experiment_id
            self._existing_params = dict(run.data.params)
            if self.resumed:
                for key in run.data.metrics:
                    for m in client.get_metric_history(self._run_id, key):
                        self._already_logged[key, m.step] += 1
                if run.info.status != "RUNNING":
                    client.update_run(self._run_id, status="RUNNING")
        else:
            if self._experiment_id is None:
                self._experiment_id = self._get_or_create_experiment()
            tags = dict(self.tags or {})
            if self._run_name is not None:
                tags[MLFLOW_RUN_NAME] = self._run_name
            from lightning.pytorch.loggers.mlflow import _get_resolve_tags

            self._run_id = client.create_run(experiment_id=self._experiment_id,
                                             tags=_get_resolve_tags()(tags)).info.run_id
        if self.resume_step is not None:
            client.set_tag(self._run_id, RESUMED_FROM_STEP_TAG, str(self.resume_step))
        self._initialized = True

    def _get_or_create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        client = self._mlflow_client
        expt = client.get_experiment_by_name(self._experiment_name)
        if expt is not None and expt.lifecycle_stage != "deleted":
            return expt.experiment_id
        try:
            return client.create_experiment(name=self._experiment_name, artifact_location=self._artifact_location)
        except MlflowException as e:  # another run created it in between
            expt = client.get_experiment_by_name(self._experiment_name)
            if expt is None:
                raise e
            return expt.experiment_id

    # -- logging -----------------------------------------------------------------------------------
    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        params = _flatten_dict(_convert_params(params))
        values = {k: str(v)[:250] for k, v in params.items()}  # as Lightning's MLFlowLogger truncates
        _ = self.experiment
        if self._existing_params:  # a continued run: MLflow params cannot change
            changed = sorted(k for k, v in values.items() if k in self._existing_params and self._existing_params[k] != v)
            if changed:
                rank_zero_warn(f"MLflow run {self._run_id} keeps its params; not changed: {', '.join(changed[:10])}"
                               + (" ..." if len(changed) > 10 else ""))
            values = {k: v for k, v in values.items() if k not in self._existing_params}
        if values:
            self._deliver({"op": "params", "params": values})
            self._existing_params.update(values)

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        timestamp = int(time.time() * 1000)
        step = step or 0
        rows = []
        for key, value in metrics.items():
            if isinstance(value, str):
                continue
            key = re.sub("[^a-zA-Z0-9_/. -]+", "", key)
            if self._already_logged[key, step] > 0:  # re-run after a resume: the run has this value
                self._already_logged[key, step] -= 1
                continue
            rows.append([key, float(value), timestamp, step])
        if rows:
            self._deliver({"op": "metrics", "metrics": rows})

    @rank_zero_only
    def set_tags(self, tags: dict) -> None:
        """Set run tags."""
        self._deliver({"op": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    @rank_zero_only
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one local file or folder to this run's artifacts."""
        self._deliver({"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})

    # -- delivery: direct while the store answers, else buffered + spooled + resent -------------------
    def _deliver(self, call: dict, resend_later: bool = True) -> None:
        call = {"run_id": self.run_id, "tracking_uri": self._tracking_uri, **call}
        with self._lock:
            if self._pending:  # the store was unreachable: keep the order, do not wait
                self._keep(call)
                return
        try:
            tracking_spool.send(self.experiment, call)
        except Exception as e:  # noqa: BLE001 - transient ones kept, the rest re-raised
            if not is_transient(e):
                raise
            with self._lock:
                self._keep(call)
                if resend_later:
                    self._start_flusher(e)

    def _keep(self, call: dict) -> None:
        """Spool a call and queue it for resending (under the lock)."""
        self._unspooled.append(call)
        if len(self._unspooled) > self._max_buffered:  # the disk stayed full for that long: the oldest is lost
            self._unspooled.popleft()
            self._unspooled_lost += 1
        self._write_unspooled()
        self._pending.append(call)
        if len(self._pending) > self._max_buffered:
            self._pending.popleft()
            self._dropped += 1

    def _write_unspooled(self) -> None:
        """Append the kept calls that are not in the spool yet, oldest first (under the lock). A full disk keeps
        them in memory (one line says so, once), to be written by the next call that finds space."""
        spool = self._spool_file()
        while self._unspooled:
            try:
                tracking_spool.append(spool, self._unspooled[0])
            except DiskFull:
                if not self._spool_full:
                    self._spool_full = True
                    free = free_bytes(spool)
                    print(f"[workbench] {spool}: disk full, MLflow logging calls cannot be spooled (the next needs "
                          f"{len(tracking_spool.encode(self._unspooled[0]))} bytes, "
                          f"{'?' if free is None else free} free); training goes on, the calls not sent yet are kept "
                          "in memory only (lost if the process dies) and spooled when there is space again",
                          file=sys.stderr, flush=True)
                return
            self._unspooled.popleft()
            self._spooled = True
        if self._spool_full:
            self._spool_full = False
            print(f"[workbench] {spool}: space again, the MLflow logging calls kept in memory are spooled",
                  file=sys.stderr, flush=True)

    def _spool_file(self) -> Path:
        if self.spool_path is None:
            self.spool_path = Path.cwd() / f"mlflow-spool-{self._run_id}.jsonl"
        return self.spool_path

    def _start_flusher(self, error: Exception) -> None:
        """Start the thread that resends pending calls (under the lock), unless it runs."""
        if self._resending:
            return
        print(f"[workbench] MLflow store {self._tracking_uri} unreachable ({first_line(error)}); training goes on, "
              f"logging is kept in {self._spool_file()} and resent when the store answers", file=sys.stderr, flush=True)
        self._resending = True
        self._stop.clear()
        self._flusher = threading.Thread(target=self._resend_loop, name="mlflow-resend", daemon=True)
        self._flusher.start()

    def _resend_loop(self) -> None:
        wait = self._retry_interval_s
        while not self._stop.wait(wait):
            if self._resend(last=True):
                print(f"[workbench] MLflow store {self._tracking_uri} reachable again; kept logging sent",
                      file=sys.stderr, flush=True)
                return
            wait = min(wait * 2, MAX_RETRY_INTERVAL_S)

    def _resend(self, last: bool = False) -> bool:
        """Send pending calls in order; True once none is left (then, with ``last``, the resend thread is
        marked finished in the same locked step). Stops at the first transient failure."""
        while True:
            with self._lock:
                if not self._pending:
                    if last:
                        self._resending = False
                    return True
                call = self._pending[0]
            try:
                tracking_spool.send(self._mlflow_client, call)
            except Exception as e:  # noqa: BLE001 - a call the store refuses for good is dropped (it is spooled)
                if is_transient(e):
                    return False
                self._refused += 1
                rank_zero_warn(f"MLflow refused a kept {call['op']} call ({first_line(e)}); it stays in the spool")
            with self._lock:
                if self._pending and self._pending[0] is call:
                    self._pending.popleft()
                if self._unspooled and self._unspooled[0] is call:  # sent: no need to spool it any more
                    self._unspooled.popleft()

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if not self._initialized:
            return
        status = {"success": "FINISHED", "failed": "FAILED", "finished": "FINISHED"}.get(status, status)
        if self._flusher is not None:
            self._stop.set()
            self._flusher.join()
            self._resending = False
        if self._checkpoint_callback:
            self._scan_and_log_checkpoints(self._checkpoint_callback)
        self._resend()
        self._deliver({"op": "terminate", "status": status, "end_time": int(time.time() * 1000)}, resend_later=False)
        with self._lock:
            unsent = len(self._pending) + self._dropped
            if unsent:
                self._write_unspooled()  # the last chance to spool what a full disk kept in memory
            not_spooled = len(self._unspooled) + self._unspooled_lost if unsent else 0
        spool = self._spool_file()
        if unsent:
            lost = (f"; {not_spooled} of them could not be written there (disk full) and are lost"
                    if not_spooled else "")
            print(f"[workbench] MLflow store {self._tracking_uri} still unreachable: {unsent} logging calls of run "
                  f"{self._run_id} are kept in {spool}{lost}. When the store is back, send them with:\n"
                  f"  workbench tracking sync {spool}", file=sys.stderr, flush=True)
        elif self._refused:
            print(f"[workbench] MLflow refused {self._refused} logging calls of run {self._run_id} (see the warnings "
                  f"above); they are kept in {spool}", file=sys.stderr, flush=True)
        elif self._spooled and spool.exists():
            spool.unlink()  # everything it held reached the store
            self._spooled = False

    @property
    def unsent_calls(self) -> int:
        """Logging calls that have not reached the store (kept in the spool file)."""
        with self._lock:
            return len(self._pending) + self._dropped
