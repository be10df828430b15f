"""What a review compares: the pairs of videos (same prompt index and seed) of one ``--compare-base``
evaluation folder (the base model first, the fine-tune second) or of two evaluation folders of the same suite
(the first folder's model first). Kept, with the reviewers' secret tokens, in ``DIR/review.json``: the server
side of the blinding. Nothing here is ever sent to a reviewer's browser."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from workbench.common import UserError, atomic_write_json, first_line

SESSION_FILE = "review.json"
VOTES_DB = "votes.sqlite"
FORMAT = 1
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


class ReviewError(UserError):
    """A review's input is wrong: the message names the file and the fix."""


def _results(folder: Path) -> dict:
    path = folder / "results.json"
    if not path.is_file():
        raise ReviewError(f"{path}: no such file; pass a folder `workbench eval --out` wrote (with results.json)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(results.get("videos"), list) or not results["videos"]:
            raise ValueError("no videos")
    except (ValueError, AttributeError) as e:
        raise ReviewError(f"{path}: not an evaluation's results ({first_line(e)}); run `workbench eval` again into "
                          "that folder") from None
    return results


def _tracking(folder: Path) -> str | None:
    try:
        state = json.loads((folder / ".eval-state.json").read_text(encoding="utf-8"))
        return (state.get("mlflow") or {}).get("tracking_uri")
    except (OSError, ValueError):
        return None


def _video(folder: Path, rel: str | None, what: str) -> str:
    if not rel:
        raise ReviewError(f"{folder / 'results.json'}: {what} has no video; evaluate the suite again into that folder")
    path = (folder / rel).resolve()
    if not path.is_file():
        raise ReviewError(f"{path}: the video of {what} is missing; run the same `workbench eval` again to finish "
                          "the folder")
    return str(path)


def _criteria(folder: Path, results: dict) -> list[str]:
    """The suite's ``review: {criteria: [...]}`` (the copy in the evaluation folder, else the suite file)."""
    import yaml

    for path in (folder / "suite.yaml", Path(results.get("suite_file") or "/nonexistent")):
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError:
                return []
            criteria = (data.get("review") or {}).get("criteria") or [] if isinstance(data, dict) else []
            if not isinstance(criteria, list) or not all(isinstance(c, str) and c.strip() for c in criteria):
                raise ReviewError(f"{path}: review.criteria must be a list of questions (text)")
            return [c.strip() for c in criteria]
    return []


def _model(results: dict, folder: Path, which: str) -> dict:
    label = results.get("base_model") if which == "base" else results.get("model")
    if which != "base" and results.get("lora"):
        label = f"{label} + LoRA {results['lora']}"
    return {"label": str(label or which), "role": which, "eval": str(folder), "run_id": results.get("run_id"),
            "tracking_uri": _tracking(folder)}


def build_session(evals: list[Path], reviewers: list[str], criteria: list[str] | None = None) -> dict:
    """The review of one ``--compare-base`` folder (base vs fine-tuned) or two folders (first vs second)."""
    if not 1 <= len(evals) <= 2:
        raise ReviewError("pass one evaluation folder made with --compare-base, or two of the same suite")
    folders = [Path(e).resolve() for e in evals]
    for f in folders:
        if not f.is_dir():
            raise ReviewError(f"{f}: no such evaluation folder; pass the --out folder of `workbench eval`")
    results = [_results(f) for f in folders]
    pairs = []
    if len(folders) == 1:
        folder, r = folders[0], results[0]
        if not any(v.get("base_path") for v in r["videos"]):
            raise ReviewError(f"{folder / 'results.json'}: one model only; run `workbench eval` with --compare-base, "
                              "or pass a second evaluation folder of the same suite")
        models = [_model(r, folder, "base"), _model(r, folder, "fine-tuned")]
        for v in r["videos"]:
            what = f"prompt {v['prompt_index']} seed {v['seed']}"
            pairs.append({"prompt_index": v["prompt_index"], "seed": v["seed"], "prompt": v["prompt"],
                          "A": _video(folder, v.get("base_path"), what + " (base)"),
                          "B": _video(folder, v.get("path"), what)})
    else:
        if results[0].get("suite") != results[1].get("suite"):
            raise ReviewError(f"{folders[1]}: suite {results[1].get('suite')!r}, not {results[0].get('suite')!r} as "
                              f"{folders[0]}; compare two evaluations of the same suite")
        models = [_model(r, f, "model") for f, r in zip(folders, results)]
        second = {(v["prompt_index"], v["seed"]): v for v in results[1]["videos"]}
        for v in results[0]["videos"]:
            w = second.get((v["prompt_index"], v["seed"]))
            if w is None:
                continue
            what = f"prompt {v['prompt_index']} seed {v['seed']}"
            pairs.append({"prompt_index": v["prompt_index"], "seed": v["seed"], "prompt": v["prompt"],
                          "A": _video(folders[0], v.get("path"), what), "B": _video(folders[1], w.get("path"), what)})
        if not pairs:
            raise ReviewError(f"{folders[1]}: no prompt and seed in common with {folders[0]}; evaluate the same suite")
    for m, key in zip(models, "AB"):
        m["key"] = key
    for p in pairs:
        p["id"] = f"p{p['prompt_index']:03d}-s{p['seed']}"
    names = reviewers or ["reviewer"]
    for name in names:
        if not NAME.match(name):
            raise ReviewError(f"--reviewers: {name!r} is not a name (letters, digits, . _ -, at most 40)")
    if len(set(names)) != len(names):
        raise ReviewError("--reviewers: a name is given twice")
    if criteria is None:
        criteria = _criteria(folders[0], results[0])
    return {"format": FORMAT, "evals": [str(f) for f in folders], "suite": results[0].get("suite"), "models": models,
            "pairs": pairs, "criteria": list(criteria), "secret": secrets.token_hex(32),
            "reviewers": {n: secrets.token_urlsafe(18) for n in names}}


def open_session(out: Path, evals: list[Path] | None = None, reviewers: list[str] | None = None,
                 criteria: list[str] | None = None) -> dict:
    """The review in ``out`` (created from ``evals`` the first time; later the same evaluations resume it, and
    new reviewer names are added with new tokens)."""
    path = out / SESSION_FILE
    if path.is_file():
        try:
            session = json.loads(path.read_text(encoding="utf-8"))
            if session.get("format") != FORMAT:
                raise ValueError(f"format {session.get('format')}")
        except ValueError as e:
            raise ReviewError(f"{path}: unreadable ({first_line(e)}); pass another --out") from None
        if evals and [str(Path(e).resolve()) for e in evals] != session["evals"]:
            raise ReviewError(f"--out {out}: holds the review of {', '.join(session['evals'])}; pass another --out "
                              "for other evaluations")
        added = [n for n in (reviewers or []) if n not in session["reviewers"]]
        for name in added:
            if not NAME.match(name):
                raise ReviewError(f"--reviewers: {name!r} is not a name (letters, digits, . _ -, at most 40)")
            session["reviewers"][name] = secrets.token_urlsafe(18)
        if added:
            atomic_write_json(path, session, what="the review session")
        return session
    if not evals:
        raise ReviewError(f"{out}: no review here ({SESSION_FILE} missing); start one with `workbench review serve "
                          "EVAL --out DIR`")
    session = build_session(evals, reviewers or [], criteria)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, session, what="the review session")
    return session


@dataclass(frozen=True)
class Item:
    """One pair as one reviewer sees it: opaque ids only."""
    id: str
    pair: dict
    left: str  # "A" or "B": the model on the left
    video_left: str
    video_right: str


def reviewer_items(session: dict, reviewer: str) -> list[Item]:
    """The reviewer's items in their order: order, sides and every id come from an HMAC of the session's
    secret, the reviewer and the pair, so they are stable across restarts and say nothing about the models."""
    key = bytes.fromhex(session["secret"])

    def mac(*parts: str) -> str:
        return hmac.new(key, "\x00".join((reviewer, *parts)).encode(), hashlib.sha256).hexdigest()

    items = []
    for p in sorted(session["pairs"], key=lambda p: mac("order", p["id"])):
        left = "A" if int(mac("side", p["id"])[:8], 16) % 2 == 0 else "B"
        items.append(Item(mac("item", p["id"])[:20], p, left, mac("video", p["id"], "left")[:24],
                          mac("video", p["id"], "right")[:24]))
    return items
