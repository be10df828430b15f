"""The statistics of pairwise votes, as pure functions (tested against hand-computed values).

A vote's outcome is the winner, ``"A"`` (the first model), ``"B"`` (the second) or ``"tie"``; the win rate of
B over A counts a tie as half a win.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from itertools import combinations

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval


def win_rate(wins: float, losses: float, ties: float) -> float | None:
    """Share of points won, a tie counting half; None without votes."""
    n = wins + losses + ties
    return (wins + 0.5 * ties) / n if n else None


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float] | None:
    """Wilson's score interval of a proportion (``successes`` may be fractional: ties counted half)."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - margin), min(1.0, centre + margin)


def bootstrap_over_prompts(per_prompt: list[tuple[float, float]], *, resamples: int = 2000, seed: int = 0,
                           confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap of the pooled win rate, resampling prompts (each ``(points, votes)``) with
    replacement: votes on one prompt are not independent, so prompts are the unit."""
    groups = [(p, n) for p, n in per_prompt if n > 0]
    if not groups:
        return None
    rng = random.Random(seed)
    rates = []
    for _ in range(resamples):
        draw = [groups[rng.randrange(len(groups))] for _ in groups]
        rates.append(sum(p for p, _ in draw) / sum(n for _, n in draw))
    rates.sort()
    tail = (1 - confidence) / 2
    low = rates[max(0, math.floor(tail * resamples))]
    high = rates[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return low, high


def cohen_kappa(first: list[str], second: list[str]) -> float | None:
    """Cohen's kappa of two raters' labels of the same items; None with no items, 1.0 when both agree on a
    single category (no disagreement is possible to measure)."""
    if len(first) != len(second):
        raise ValueError("the two raters must label the same items")
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second)) / n
    c1, c2 = Counter(first), Counter(second)
    expected = sum(c1[k] * c2[k] for k in set(c1) | set(c2)) / (n * n)
    if expected == 1:
        return 1.0
    return (observed - expected) / (1 - expected)


def fleiss_kappa(counts: list[list[int]]) -> float | None:
    """Fleiss' kappa from a table of items x categories (how many raters put the item in each category).
    Items may have different numbers of raters (each needs at least two): each item's agreement is over its
    own rater pairs, category shares are over all ratings."""
    rows = [r for r in counts if sum(r) >= 2]
    if not rows:
        return None
    agreement = [sum(c * (c - 1) for c in r) / (sum(r) * (sum(r) - 1)) for r in rows]
    total = sum(sum(r) for r in rows)
    shares = [sum(r[j] for r in rows) / total for j in range(len(rows[0]))]
    p_bar, p_e = sum(agreement) / len(rows), sum(s * s for s in shares)
    if p_e == 1:
        return 1.0
    return (p_bar - p_e) / (1 - p_e)


def bradley_terry(wins: dict[tuple[str, str], float], *, iterations: int = 1000, tol: float = 1e-10) -> dict[str, float]:
    """Bradley-Terry strengths from ``wins[(i, j)]`` = times i beat j (a tie: half to each), by Hunter's (2004)
    MM iteration, normalised to sum to 1. P(i beats j) = s_i / (s_i + s_j)."""
    players = sorted({p for pair in wins for p in pair})
    total = {p: sum(w for (i, _), w in wins.items() if i == p) for p in players}
    games = Counter()
    for (i, j), w in wins.items():
        games[frozenset((i, j))] += w
    strength = {p: 1.0 / len(players) for p in players}
    for _ in range(iterations):
        new = {}
        for p in players:
            denominator = sum(games[frozenset((p, q))] / (strength[p] + strength[q]) for q in players if q != p)
            new[p] = max(total[p], 1e-9) / denominator if denominator else strength[p]
        norm = sum(new.values())
        new = {p: v / norm for p, v in new.items()}
        done = max(abs(new[p] - strength[p]) for p in players) < tol
        strength = new
        if done:
            break
    return strength


def agreement(votes_by_item: dict[str, dict[str, str]], categories=("A", "B", "tie")) -> dict:
    """Inter-reviewer agreement over the items several reviewers voted on: Fleiss' kappa over those items and
    Cohen's kappa of each pair of reviewers over the items both saw. ``votes_by_item``: item -> reviewer ->
    outcome."""
    shared = {item: v for item, v in votes_by_item.items() if len(v) >= 2}
    table = [[list(v.values()).count(c) for c in categories] for v in shared.values()]
    reviewers = sorted({r for v in shared.values() for r in v})
    cohen = {}
    for a, b in combinations(reviewers, 2):
        both = [v for v in shared.values() if a in v and b in v]
        if both:
            cohen[f"{a}|{b}"] = {"items": len(both), "kappa": cohen_kappa([v[a] for v in both], [v[b] for v in both])}
    return {"items_seen_by_several": len(shared), "fleiss_kappa": fleiss_kappa(table), "cohen_kappa": cohen}
