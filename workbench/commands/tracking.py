"""``workbench tracking sync SPOOL``: send what a run could not deliver to its MLflow store."""

from __future__ import annotations

import argparse
import sys

from workbench.common import first_line


def register(subparsers) -> None:
    tracking = subparsers.add_parser("tracking", help="MLflow tracking tools")
    sub = tracking.add_subparsers(dest="tracking_command", metavar="TRACKING_COMMAND")
    p = sub.add_parser(
        "sync", help="send the logging calls a run could not deliver (mlflow-spool.jsonl) to its MLflow store",
        description="Send the metrics, params, tags, artifacts and end status that a run kept in its spool file "
                    "while the MLflow store was unreachable. Safe to run more than once: what the run already "
                    "has is not sent again.")
    p.add_argument("spool", help="the spool file, e.g. runs/<run id>/mlflow-spool.jsonl")
    p.add_argument("--tracking-uri", help="the store to send to (default: the one the run logged to)")
    p.set_defaults(func=run_sync)


def run_sync(ns: argparse.Namespace) -> int:
    from workbench.tracking.spool import sync

    try:
        counts = sync(ns.spool, ns.tracking_uri)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the store failed mid-way; the sync can simply be run again
        print(f"error: the store failed during the sync ({first_line(e)}); nothing is lost, run the same command "
              "again when it is reachable", file=sys.stderr)
        return 1
    print(f"synced {ns.spool}: {counts.get('metrics_sent', 0)} metric values sent "
          f"({counts.get('metrics_present', 0)} already in the run), {counts.get('params_sent', 0)} params, "
          f"{counts.get('artifacts_sent', 0)} artifacts, {counts.get('calls', 0)} calls")
    return 0
