"""``workbench review serve|summary``: blind human preference review of two models' videos."""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.common import UserError


def register(subparsers) -> None:
    review = subparsers.add_parser("review", help="blind human preference review of two models' videos "
                                   "(a local web page per reviewer) and its statistics")
    sub = review.add_subparsers(dest="review_command", metavar="REVIEW_COMMAND")
    p = sub.add_parser(
        "serve", help="serve the review page; prints one secret link per reviewer",
        description="Serve a blind side-by-side review of one `workbench eval --compare-base` folder (base vs "
                    "fine-tuned) or of two evaluation folders of the same suite (first vs second). Prints one link "
                    "per reviewer; every vote is committed before it is acknowledged. Stop with Ctrl-C; the same "
                    "command (same --out) resumes, and the links stay valid.")
    p.add_argument("evals", nargs="+", metavar="EVAL", help="one --compare-base evaluation folder, or two folders")
    p.add_argument("--out", required=True, help="the review's folder (session, votes, summary)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free port; default 8765)")
    p.add_argument("--reviewers", default="", help="comma-separated reviewer names (default: one, 'reviewer')")
    p.add_argument("--criteria", default=None,
                   help="'|'-separated extra questions (default: the suite's review.criteria)")
    p.set_defaults(func=run_serve)
    s = sub.add_parser("summary", help="the votes' statistics: DIR/summary.json and summary.md, logged to MLflow",
                       description="Win rate of the second model over the first (ties half) with its 95 %% "
                                   "interval, per prompt and per reviewer, inter-reviewer agreement; writes "
                                   "summary.json, summary.md and the vote log votes.jsonl into DIR and logs them to "
                                   "the evaluations' MLflow runs.")
    s.add_argument("out", metavar="DIR", help="the review's folder (serve's --out)")
    s.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    s.add_argument("--tracking-uri", help="the MLflow store (default: the one the evaluation logged to)")
    s.set_defaults(func=run_summary)
    review.set_defaults(func=lambda ns: (review.print_help(), 2)[1])


def run_serve(ns: argparse.Namespace) -> int:
    import socket

    import uvicorn

    from workbench.review.app import create_app
    from workbench.review.session import VOTES_DB, open_session, reviewer_items
    from workbench.review.store import VoteStore

    if len(ns.evals) > 2:
        raise UserError("review serve: pass one --compare-base evaluation folder or two folders, not "
                        f"{len(ns.evals)}")
    out = Path(ns.out)
    reviewers = [r.strip() for r in ns.reviewers.split(",") if r.strip()]
    criteria = [c.strip() for c in ns.criteria.split("|") if c.strip()] if ns.criteria is not None else None
    session = open_session(out, [Path(e) for e in ns.evals], reviewers, criteria)
    store = VoteStore(out / VOTES_DB)
    app = create_app(session, store)
    sock = socket.socket(socket.AF_INET6 if ":" in ns.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((ns.host, ns.port))
    except OSError as e:
        raise UserError(f"--host {ns.host} --port {ns.port}: cannot listen there ({e.strerror}); pick another "
                        "--port (0: any free one)") from None
    port = sock.getsockname()[1]
    shown = f"[{ns.host}]" if ":" in ns.host else ns.host
    first, second = session["models"]
    print(f"review of {len(session['pairs'])} pairs (suite {session['suite']}): first {first['label']!r}, second "
          f"{second['label']!r}; votes in {out / VOTES_DB}", flush=True)
    if session["criteria"]:
        print("extra questions: " + "; ".join(session["criteria"]), flush=True)
    for name, token in session["reviewers"].items():
        done = len(store.voted(name))
        print(f"{name}: http://{shown}:{port}/r/{token}/  ({done} of {len(reviewer_items(session, name))} done)",
              flush=True)
    print(f"summary: workbench review summary {out}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.close()
    return 0


def run_summary(ns: argparse.Namespace) -> int:
    from workbench.review.summary import review_summary, summary_markdown

    s = review_summary(Path(ns.out), log=not ns.no_mlflow, tracking_uri=ns.tracking_uri)
    print(summary_markdown(s), end="")
    print(f"written: {Path(ns.out) / 'summary.json'}, summary.md, votes.jsonl" +
          (f"; logged to MLflow run(s) {', '.join(s['logged_to'])}" if s["logged_to"] else ""))
    return 0
