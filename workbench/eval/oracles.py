"""Oracles: programs that read what a generated video shows from its own pixels, named by a suite's ``oracle:``.

An oracle is an ``Oracle`` (its attribute names, how a prompt names them, how a video shows them). Oracles are
found through the Python entry-point group ``workbench.oracles`` (pyproject.toml: ``shapes =
"workbench.shapes.oracle:SHAPES_ORACLE"``), so evaluation never imports the world an oracle belongs to, and a
package of your own adds one the same way. The scoring is the oracle's: each video's reading and per-attribute
verdict, and the share of right ones per attribute (``eval/<suite>/accuracy/<attribute>``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

ENTRY_POINT_GROUP = "workbench.oracles"


@dataclass(frozen=True)
class Oracle:
    """``parse_prompt(prompt)``: the attributes a prompt names (None: not a prompt this oracle reads);
    ``read_video(video)``: the attributes a video (F, C, H, W) shows; ``prompt_help``: which prompts it reads."""

    name: str
    attributes: tuple[str, ...]
    parse_prompt: Callable[[str], dict | None]
    read_video: Callable[..., dict]
    prompt_help: str = ""


@cache
def oracles() -> dict[str, Oracle]:
    """Every installed oracle by name (the ``workbench.oracles`` entry points)."""
    from importlib.metadata import entry_points

    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        oracle = ep.load()
        found[oracle.name] = oracle
    return found


def get_oracle(name: str) -> Oracle:
    known = oracles()
    if name not in known:
        raise KeyError(name)
    return known[name]


def check_video(oracle: Oracle, video, prompt: str) -> dict | None:
    """What ``oracle`` reads in ``video`` and, per attribute, whether it is what ``prompt`` names (``all``: every
    attribute right). None when the prompt is not one the oracle reads."""
    wanted = oracle.parse_prompt(prompt)
    if wanted is None:
        return None
    got = oracle.read_video(video)
    ok = {a: got[a] == wanted[a] for a in oracle.attributes}
    ok["all"] = all(ok.values())
    return {"read": got, "ok": ok}


@dataclass
class PromptAccuracy:
    """Per-attribute accuracy of a set of videos against their prompts, in total and per prompt."""

    total: dict[str, float]
    per_prompt: dict[str, dict[str, float]]
    num_videos: int

    def metrics(self, suffix: str = "") -> dict[str, float]:
        """``eval/accuracy/<attribute>`` (+ ``suffix``, e.g. ``_base``) for MLflow."""
        return {f"eval/accuracy/{k}{suffix}": v for k, v in self.total.items()}


def accuracy(checks: list[dict | None], prompts: list[str], attributes: tuple[str, ...] | None = None) -> PromptAccuracy:
    """Share of checked videos (``check_video`` results, None skipped) whose attribute is right."""
    if attributes is None:
        attributes = tuple(next((c["ok"] for c in checks if c is not None), {"all": 0}))
    keys = tuple(dict.fromkeys((*attributes, "all")))
    hits: dict[str, Counter] = defaultdict(Counter)
    seen: Counter = Counter()
    for check, prompt in zip(checks, prompts):
        if check is None:
            continue
        seen[prompt] += 1
        for a in keys:
            hits[prompt][a] += check["ok"][a]
    n = sum(seen.values())
    total = {a: (sum(h[a] for h in hits.values()) / n if n else float("nan")) for a in keys}
    return PromptAccuracy(total, {p: {a: hits[p][a] / seen[p] for a in keys} for p in seen}, n)
