"""The MLflow spool: logging calls that could not reach the tracking store, kept on disk, and
``workbench tracking sync`` that sends them later.

Each line of a spool file (``mlflow-spool.jsonl`` in the run directory) is one call of the run's logger
as JSON: ``{"op": "metrics" | "params" | "tags" | "artifact" | "terminate", "run_id", "tracking_uri", ...}``.
The logger (workbench.tracking.DurableMLflowLogger) appends a call before it first retries it, so a crash loses
nothing; it deletes the file once everything in it reached the store. An append that meets a full disk (ENOSPC,
EDQUOT) cuts the file back to the records it held and raises ``DiskFull`` naming the file and the record's size:
the records already spooled stay whole and readable, never followed by half a line. Syncing is idempotent: metric values
already in the run (same key, step, timestamp and value), params already set and artifacts are not sent twice.

Kept free of Lightning and torch so the ``workbench`` command starts quickly.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from pathlib import Path

from workbench.common import disk_full_error, first_line, is_disk_full

SPOOL_FILE = "mlflow-spool.jsonl"
PARAMS_PER_BATCH = 100  # MLflow's limits for one log_batch call
METRICS_PER_BATCH = 1000
# MLflow error codes that no retry will fix (the call itself is wrong); anything else may pass.
PERMANENT_ERRORS = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST",
                    "INVALID_STATE", "MALFORMED_REQUEST", "ENDPOINT_NOT_FOUND"}


def is_transient(error: BaseException) -> bool:
    """Whether a failed MLflow call may succeed later: the store unreachable, timing out, overloaded,
    failing on its side, or (sqlite) locked by another writer."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, MlflowException):
        return error.error_code not in PERMANENT_ERRORS
    if isinstance(error, (OSError, TimeoutError)):  # requests' ConnectionError and Timeout are OSErrors
        return True
    try:
        from sqlalchemy.exc import OperationalError
    except ImportError:  # pragma: no cover - sqlalchemy comes with mlflow
        return False
    return isinstance(error, OperationalError)


def encode(record: dict) -> bytes:
    """One spool line: the call as JSON, newline-terminated."""
    return (json.dumps(record) + "\n").encode("utf-8")


def append(path: Path, record: dict) -> None:
    """Append one call to the spool file and flush it to disk.

    All or nothing: when the disk (or quota) is full, the file is cut back to the length it had, so the records
    before stay readable and the next append starts on a line of its own, and ``DiskFull`` is raised.
    """
    data = encode(record)
    fd = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a line a kill cut short: start on a line of our own
            data = b"\n" + data
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)  # the records before stay whole; no half line for the next one to follow
            except OSError:
                pass
            raise
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path, len(data), "an MLflow spool record") from e
        raise
    finally:
        if fd is not None:
            os.close(fd)


def read(path: Path) -> list[dict]:
    """The calls in a spool file, oldest first; a line cut short by a crash is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def send(client, record: dict) -> None:
    """Make one spooled call against ``client`` (an ``MlflowClient``); raises what MLflow raises."""
    from mlflow.entities import Metric, Param, RunTag

    run_id, op = record["run_id"], record["op"]
    if op == "metrics":
        metrics = [Metric(key=k, value=float(v), timestamp=int(ts), step=int(step))
                   for k, v, ts, step in record["metrics"]]
        for i in range(0, len(metrics), METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[i: i + METRICS_PER_BATCH])
    elif op == "params":
        params = [Param(k, str(v)) for k, v in record["params"].items()]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[i: i + PARAMS_PER_BATCH])
    elif op == "tags":
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in record["tags"].items()])
    elif op == "artifact":
        path = Path(record["path"])
        if path.is_dir():
            client.log_artifacts(run_id, str(path), record.get("artifact_path"))
        else:
            client.log_artifact(run_id, str(path), record.get("artifact_path"))
    elif op == "terminate":
        client.set_terminated(run_id, record["status"], end_time=record.get("end_time"))
    else:
        raise ValueError(f"unknown spool operation {op!r}")


def _value_key(value: float):
    return "nan" if math.isnan(value) else value


def sync(path: str | os.PathLike, tracking_uri: str | None = None, out=sys.stdout) -> dict:
    """Send what a spool file holds to its run in ``tracking_uri`` (default: the store the run used).

    Returns counts: metric values sent and already present, params sent/present/conflicting, artifacts
    sent and missing on disk, calls made.
    """
    import mlflow

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such spool file")
    records = read(path)
    counts = Counter()
    clients: dict[str, object] = {}
    present: dict[tuple[str, str], Counter] = {}  # (run id, metric key) -> values already in the store
    params: dict[str, dict] = {}
    for record in records:
        uri = tracking_uri or record["tracking_uri"]
        client = clients.setdefault(uri, mlflow.MlflowClient(uri))
        run_id = record["run_id"]
        if run_id not in params:
            try:
                params[run_id] = dict(client.get_run(run_id).data.params)
            except Exception as e:  # noqa: BLE001 - reported with the store and run it concerns
                raise RuntimeError(f"run {run_id} cannot be read from {uri}: {first_line(e)}. Is the store up, "
                                   "and is it the one the run logged to (--tracking-uri)?") from None
        op = record["op"]
        if op == "metrics":
            todo = []
            for key, value, ts, step in record["metrics"]:
                if (run_id, key) not in present:
                    present[run_id, key] = Counter((m.step, m.timestamp, _value_key(m.value))
                                                   for m in client.get_metric_history(run_id, key))
                seen = present[run_id, key]
                ident = (int(step), int(ts), _value_key(float(value)))
                if seen[ident] > 0:
                    seen[ident] -= 1
                    counts["metrics_present"] += 1
                else:
                    todo.append([key, value, ts, step])
            if todo:
                send(client, {**record, "metrics": todo})
                counts["metrics_sent"] += len(todo)
        elif op == "params":
            existing = params[run_id]
            todo = {}
            for k, v in record["params"].items():
                if k not in existing:
                    todo[k] = v
                elif existing[k] == str(v):
                    counts["params_present"] += 1
                else:
                    counts["params_conflicting"] += 1
                    print(f"param {k}: the run has {existing[k]!r}, the spool {str(v)!r}; kept the run's", file=out)
            if todo:
                send(client, {**record, "params": todo})
                existing.update({k: str(v) for k, v in todo.items()})
                counts["params_sent"] += len(todo)
        elif op == "artifact":
            if not Path(record["path"]).exists():
                counts["artifacts_missing"] += 1
                print(f"artifact {record['path']} is gone from disk; not sent", file=out)
                continue
            send(client, record)
            counts["artifacts_sent"] += 1
        else:
            send(client, record)
        counts["calls"] += 1
    return dict(counts)
