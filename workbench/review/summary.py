"""``workbench review summary DIR``: the votes' statistics (summary.json, summary.md), the vote log with the
side mapping (votes.jsonl) and their logging to the evaluations' MLflow runs."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from workbench.common import atomic_write_json, atomic_write_text, first_line
from workbench.review import stats
from workbench.review.session import VOTES_DB, open_session
from workbench.review.store import VoteStore

RESAMPLES, SEED = 2000, 0


def _tally(outcomes: list[str]) -> dict:
    a, b, t = outcomes.count("A"), outcomes.count("B"), outcomes.count("tie")
    rate = stats.win_rate(b, a, t)
    return {"votes": len(outcomes), "wins_first": a, "wins_second": b, "ties": t, "win_rate": rate}


def summarize(session: dict, votes: list[dict]) -> dict:
    """Everything summary.json holds (pure: the session and the votes in, a dict out)."""
    first, second = session["models"]
    pairs = {p["id"]: p for p in session["pairs"]}
    per_prompt = []
    by_pair = defaultdict(list)
    for v in votes:
        by_pair[v["pair"]].append(v["winner"])
    for pid, p in pairs.items():
        row = {"pair": pid, "prompt_index": p["prompt_index"], "seed": p["seed"], "prompt": p["prompt"],
               **_tally(by_pair.get(pid, []))}
        per_prompt.append(row)
    outcomes = [v["winner"] for v in votes]
    total = _tally(outcomes)
    points = total["wins_second"] + 0.5 * total["ties"]
    ci = stats.bootstrap_over_prompts([(r["wins_second"] + 0.5 * r["ties"], r["votes"]) for r in per_prompt],
                                      resamples=RESAMPLES, seed=SEED)
    wilson = stats.wilson_interval(points, len(votes))
    per_reviewer = {name: sum(v["reviewer"] == name for v in votes) for name in session["reviewers"]}
    items = defaultdict(dict)
    for v in votes:
        items[v["pair"]][v["reviewer"]] = v["winner"]
    criteria = {}
    for c in session.get("criteria") or []:
        got = [v["criteria"][c] for v in votes if c in v["criteria"]]
        t = _tally(got)
        rows = defaultdict(lambda: [0.0, 0])
        for v in votes:
            if c in v["criteria"]:
                rows[v["pair"]][0] += {"B": 1.0, "tie": 0.5}.get(v["criteria"][c], 0.0)
                rows[v["pair"]][1] += 1
        criteria[c] = {**t, "ci": stats.bootstrap_over_prompts([tuple(r) for r in rows.values()],
                                                                resamples=RESAMPLES, seed=SEED)}
    return {
        "suite": session.get("suite"), "evals": session["evals"],
        "first": {k: first[k] for k in ("label", "role", "run_id", "eval")},
        "second": {k: second[k] for k in ("label", "role", "run_id", "eval")},
        "pairs": len(pairs), "votes": len(votes),
        "wins": {"first": total["wins_first"], "second": total["wins_second"]}, "ties": total["ties"],
        "win_rate": total["win_rate"],
        "win_rate_meaning": "share of votes the second model won over the first, a tie counting half",
        "ci": list(ci) if ci else None,
        "ci_method": f"95 % percentile bootstrap over prompts ({RESAMPLES} resamples, seed {SEED})",
        "wilson_ci": list(wilson) if wilson else None,
        "per_prompt": per_prompt, "per_reviewer": per_reviewer,
        "agreement": stats.agreement(items), "criteria": criteria,
    }


def _f(x, digits=3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def summary_markdown(s: dict) -> str:
    ci = f"[{_f(s['ci'][0])}, {_f(s['ci'][1])}]" if s["ci"] else "n/a"
    ag = s["agreement"]
    lines = [f"# Human review: suite `{s['suite']}`", "",
             f"- first: `{s['first']['label']}` ({s['first']['role']}, run `{s['first']['run_id']}`)",
             f"- second: `{s['second']['label']}` ({s['second']['role']}, run `{s['second']['run_id']}`)",
             f"- {s['votes']} votes on {s['pairs']} pairs; reviewers: "
             + ", ".join(f"{k} {v}" for k, v in s["per_reviewer"].items()), "",
             "| | votes | first wins | second wins | ties | win rate of second (ties half) | 95 % CI |",
             "|---|---|---|---|---|---|---|",
             f"| overall | {s['votes']} | {s['wins']['first']} | {s['wins']['second']} | {s['ties']} | "
             f"{_f(s['win_rate'])} | {ci} |"]
    for c, t in s["criteria"].items():
        cci = f"[{_f(t['ci'][0])}, {_f(t['ci'][1])}]" if t["ci"] else "n/a"
        lines.append(f"| {c} | {t['votes']} | {t['wins_first']} | {t['wins_second']} | {t['ties']} | "
                     f"{_f(t['win_rate'])} | {cci} |")
    lines += ["", f"CI: {s['ci_method']}; Wilson score interval (ties half): "
                  + (f"[{_f(s['wilson_ci'][0])}, {_f(s['wilson_ci'][1])}]" if s["wilson_ci"] else "n/a") + ".",
              f"Agreement over {ag['items_seen_by_several']} pairs seen by several reviewers: Fleiss' kappa "
              f"{_f(ag['fleiss_kappa'])}" + "".join(f"; Cohen's kappa {k.replace('|', ' vs ')} {_f(v['kappa'])} "
                                                    f"({v['items']} pairs)" for k, v in ag["cohen_kappa"].items())
              + ".", "",
              "| # | seed | prompt | votes | first | second | ties | win rate |", "|---|---|---|---|---|---|---|---|"]
    for r in s["per_prompt"]:
        lines.append(f"| {r['prompt_index']} | {r['seed']} | {r['prompt'].replace('|', '/')} | {r['votes']} | "
                     f"{r['wins_first']} | {r['wins_second']} | {r['ties']} | {_f(r['win_rate'])} |")
    return "\n".join(lines) + "\n"


def vote_log(session: dict, votes: list[dict]) -> str:
    """votes.jsonl: one vote a line, with the side mapping and the model each answer went to."""
    models = {m["key"]: m["label"] for m in session["models"]}
    pairs = {p["id"]: p for p in session["pairs"]}
    lines = []
    for v in votes:
        p = pairs.get(v["pair"], {})
        lines.append(json.dumps({**v, "prompt_index": p.get("prompt_index"), "seed": p.get("seed"),
                                 "left": models.get(v["left_model"]),
                                 "right": models.get("B" if v["left_model"] == "A" else "A"),
                                 "winner_model": models.get(v["winner"], "tie")}))
    return "\n".join(lines) + ("\n" if lines else "")


def log_summary(out: Path, s: dict, session: dict, tracking_uri: str | None = None) -> list[str]:
    """Log the summary to each evaluation's MLflow run (metrics ``review/...``, summary.json/md, votes.jsonl and
    the per-prompt table as artifacts under ``review/``, a tag pointing at ``out``). Returns the run ids."""
    from mlflow.tracking import MlflowClient

    from workbench.tracking.store import open_store, resolve_tracking_uri, store_exists

    logged = []
    seen = set()
    for m in session["models"]:
        if not m.get("run_id") or m["run_id"] in seen:
            continue
        seen.add(m["run_id"])
        uri = tracking_uri or m.get("tracking_uri") or resolve_tracking_uri()
        if not store_exists(uri):
            print(f"note: MLflow store {uri} not found; the review is not logged to run {m['run_id']}",
                  file=sys.stderr)
            continue
        try:
            open_store(uri)
            client = MlflowClient(uri)
            client.get_run(m["run_id"])
            metrics = {"review/votes": s["votes"], "review/ties": s["ties"],
                       "review/wins_first": s["wins"]["first"], "review/wins_second": s["wins"]["second"]}
            for key, value in (("win_rate", s["win_rate"]), ("fleiss_kappa", s["agreement"]["fleiss_kappa"])):
                if value is not None:
                    metrics[f"review/{key}"] = value
            if s["ci"]:
                metrics["review/win_rate_ci_low"], metrics["review/win_rate_ci_high"] = s["ci"]
            for name, value in metrics.items():
                client.log_metric(m["run_id"], name, float(value))
            for name in ("summary.json", "summary.md", "votes.jsonl"):
                client.log_artifact(m["run_id"], str(out / name), "review")
            table = {k: [r[k] for r in s["per_prompt"]] for k in ("prompt_index", "seed", "prompt", "votes",
                                                                  "wins_first", "wins_second", "ties")}
            client.log_table(m["run_id"], data=table, artifact_file="review/per_prompt.json")
            client.set_tag(m["run_id"], "workbench.review.summary", str((out / "summary.json").resolve()))
            logged.append(m["run_id"])
        except Exception as e:  # noqa: BLE001 - the files are written; logging can be repeated
            print(f"note: the review was not logged to MLflow run {m['run_id']} ({first_line(e)}); summary.json is "
                  f"in {out}; run the summary again to log it", file=sys.stderr)
    return logged


def review_summary(out: Path, *, log: bool = True, tracking_uri: str | None = None) -> dict:
    session = open_session(out)
    store = VoteStore(out / VOTES_DB)
    try:
        votes = store.votes()
    finally:
        store.close()
    s = summarize(session, votes)
    atomic_write_text(out / "votes.jsonl", vote_log(session, votes), what="the vote log")
    atomic_write_json(out / "summary.json", s, indent=2, what="the review summary")
    atomic_write_text(out / "summary.md", summary_markdown(s), what="the review summary")
    s["logged_to"] = log_summary(out, s, session, tracking_uri) if log else []
    return s
