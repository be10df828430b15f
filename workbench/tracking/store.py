"""The MLflow tracking store: which one a run uses, and opening it safely."""

from __future__ import annotations

import os
import time
from pathlib import Path

from workbench.tracking.spool import is_transient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The store to use: an explicit URI, else $MLFLOW_TRACKING_URI, else ./mlflow.db (sqlite)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def open_store(uri: str, attempts: int = 10) -> None:
    """Open (and on first use create) the tracking store, safely while other runs do the same.

    Two runs starting on a new sqlite file would race to create its tables (MLflow's migrations are not
    safe to run concurrently and can leave the file unusable), so opening a sqlite store holds a file lock
    next to it (``mlflow.db.lock``); a locked database is retried.
    """
    from mlflow.tracking import MlflowClient

    if not uri.startswith("sqlite:///"):
        MlflowClient(uri)
        return
    from filelock import FileLock

    database = Path(uri[len("sqlite:///"):])
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock"):
        for attempt in range(attempts):
            try:
                MlflowClient(uri)  # builds (creating or migrating the tables) and caches the store
                return
            except Exception as e:  # noqa: BLE001 - a locked database is retried; the rest raised
                if not is_transient(e) or attempt == attempts - 1:
                    raise
                time.sleep(min(0.2 * 2**attempt, 3.0))


def store_exists(uri: str) -> bool:
    """False for a sqlite store whose file does not exist (opening it would create an empty one)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).is_file()
    return True


def absolute_uri(uri: str) -> str:
    """``sqlite:///mlflow.db`` -> ``sqlite:////abs/path/mlflow.db`` (a record must not depend on the cwd)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on ``uri``."""
    return f"mlflow ui --backend-store-uri {uri}"
