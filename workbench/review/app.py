"""The reviewers' web app (Starlette): one page, a small JSON API and the videos, all under the reviewer's
secret token (``/r/TOKEN/...``).

Blinding: the browser only ever sees the prompt, opaque ids (HMACs of the session's secret, the reviewer and
the pair: see ``session.reviewer_items``) and the video bytes served under them. Which model is on which side,
the models' names, run ids and file paths stay on the server, with the votes.

Every answer that is not the page or a video is JSON; a bad request gets a 4xx with ``{"error": ...}``, an
unexpected failure a 500 with no details (the server's console has them).
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from workbench.review.session import reviewer_items
from workbench.review.store import VoteStore

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"review.js": "text/javascript", "review.css": "text/css"}  # the only static files served
ANSWERS = ("left", "right", "tie")
HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": "default-src 'self'; media-src 'self'; object-src 'none'; "
                                      "frame-ancestors 'none'"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=HEADERS)


def create_app(session: dict, store: VoteStore) -> Starlette:
    tokens = {token: name for name, token in session["reviewers"].items()}
    items = {name: reviewer_items(session, name) for name in session["reviewers"]}
    by_id = {name: {i.id: i for i in its} for name, its in items.items()}
    videos = {name: {v: i.pair[i.left if side == "left" else ("B" if i.left == "A" else "A")]
                     for i in its for side, v in (("left", i.video_left), ("right", i.video_right))}
              for name, its in items.items()}
    criteria = list(session.get("criteria") or [])

    def reviewer(request: Request) -> str:
        name = tokens.get(request.path_params.get("token", ""))
        if name is None:
            raise HTTPException(403, "unknown reviewer token: open the link `workbench review serve` printed for you")
        return name

    def state(name: str) -> dict:
        voted = store.voted(name)
        total = len(items[name])
        nxt = next((i for i in items[name] if i.pair["id"] not in voted), None)
        if nxt is None:
            return {"done": True, "n": total, "total": total, "criteria": criteria}
        return {"done": False, "n": len(voted) + 1, "total": total, "item": nxt.id, "prompt": nxt.pair["prompt"],
                "left": f"video/{nxt.video_left}", "right": f"video/{nxt.video_right}", "criteria": criteria}

    def page(request: Request) -> Response:
        reviewer(request)
        if not request.url.path.endswith("/"):
            return RedirectResponse(request.url.path + "/", status_code=308, headers=HEADERS)
        return Response((STATIC / "review.html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers=HEADERS)

    def asset(request: Request) -> Response:
        reviewer(request)
        name = request.path_params["name"]
        if name not in ASSETS:
            raise HTTPException(404, "no such file")
        return Response((STATIC / name).read_bytes(), media_type=ASSETS[name], headers=HEADERS)

    def video(request: Request) -> Response:
        name = reviewer(request)
        path = videos[name].get(request.path_params["vid"])
        if path is None:
            raise HTTPException(404, "no such video")
        return FileResponse(path, media_type="video/mp4", headers=HEADERS)

    def next_item(request: Request) -> Response:
        return JSONResponse(state(reviewer(request)), headers=HEADERS)

    async def vote(request: Request) -> Response:
        name = reviewer(request)
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise HTTPException(400, "the body must be JSON: {\"item\": ..., \"answer\": \"left\"|\"right\"|\"tie\"}")
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        item = by_id[name].get(body.get("item")) if isinstance(body.get("item"), str) else None
        if item is None:
            raise HTTPException(404, "no such item for this reviewer")
        if body.get("answer") not in ANSWERS:
            raise HTTPException(400, "answer must be one of left, right, tie")
        given = body.get("criteria") or {}
        if not isinstance(given, dict) or set(given) != {str(k) for k in range(len(criteria))} \
                or any(a not in ANSWERS for a in given.values()):
            raise HTTPException(400, f"criteria must answer each of the {len(criteria)} questions with left, right "
                                     "or tie, keyed by their number")
        right = "B" if item.left == "A" else "A"

        def winner(answer: str) -> str:
            return {"left": item.left, "right": right, "tie": "tie"}[answer]

        import anyio

        added = await anyio.to_thread.run_sync(
            lambda: store.add(name, item.pair["id"], body["answer"], item.left, winner(body["answer"]),
                              {criteria[int(k)]: winner(a) for k, a in given.items()}))
        if not added:
            raise HTTPException(409, "this item already has your vote")
        return JSONResponse({"ok": True, "next": state(name)}, headers=HEADERS)

    def elsewhere(request: Request) -> Response:
        parts = request.url.path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "r":
            if parts[1] not in tokens:
                raise HTTPException(403, "unknown reviewer token: open the link `workbench review serve` printed")
            raise HTTPException(404, "not found")
        raise HTTPException(401, "a reviewer token is needed: open the link `workbench review serve` printed for you")

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, exc.detail or "error")

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(500, "internal error (the server's console says more)")

    routes = [
        Route("/r/{token}", page),
        Route("/r/{token}/", page),
        Route("/r/{token}/static/{name}", asset),
        Route("/r/{token}/video/{vid}", video),
        Route("/r/{token}/api/next", next_item),
        Route("/r/{token}/api/vote", vote, methods=["POST"]),
        Route("/{path:path}", elsewhere, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
