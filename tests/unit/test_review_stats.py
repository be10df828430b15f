"""The review's statistics against hand-computed values (workbench/review/stats.py)."""

import pytest

from workbench.review import stats
from workbench.review.summary import summarize


def test_win_rate_counts_ties_half():
    assert stats.win_rate(6, 2, 2) == pytest.approx(0.7)
    assert stats.win_rate(0, 0, 0) is None


def test_wilson_interval_by_hand():
    # p = 0.8, n = 10, z = 1.96: centre (0.8 + 0.19207) / 1.38415 = 0.71674, margin 1.96 * 0.16001 / 1.38415 = 0.22659
    low, high = stats.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    low, high = stats.wilson_interval(0, 5)  # 0 of 5: [0, z^2 / (n + z^2)] = [0, 0.4345]
    assert low == 0 and high == pytest.approx(3.8415 / 8.8415, abs=1e-4)
    assert stats.wilson_interval(0, 0) is None


def test_bootstrap_over_prompts():
    # every prompt at the same rate: every resample gives it
    assert stats.bootstrap_over_prompts([(1.5, 2), (3, 4), (0.75, 1)]) == pytest.approx((0.75, 0.75))
    low, high = stats.bootstrap_over_prompts([(2, 2), (0, 2), (1, 2), (2, 2)], resamples=4000)
    assert 0 <= low < 0.625 < high <= 1  # pooled 5/8 inside; bounded by the prompts' extremes
    assert stats.bootstrap_over_prompts([(0, 0)]) is None


def test_cohen_kappa_by_hand():
    # Wikipedia's example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o 0.7, p_e 0.5, kappa 0.4
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert stats.cohen_kappa(a, b) == pytest.approx(0.4)
    assert stats.cohen_kappa(["A", "B"], ["A", "B"]) == pytest.approx(1.0)
    assert stats.cohen_kappa(["A", "B"], ["B", "A"]) == pytest.approx(-1.0)


def test_fleiss_kappa_by_hand():
    # Fleiss (1971) as Wikipedia works it: 10 items, 14 raters, 5 categories -> P 0.378, P_e 0.213, kappa 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert stats.fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-3)
    # two raters: equals Cohen's kappa when both raters' category shares are pooled (Scott's pi); full agreement 1
    assert stats.fleiss_kappa([[2, 0, 0], [0, 2, 0]]) == pytest.approx(1.0)
    # 4 items, two raters, agree on 2: P = 0.5; shares A 3/8, B 3/8, tie 2/8 -> P_e 0.34375, kappa 0.2381
    assert stats.fleiss_kappa([[2, 0, 0], [0, 2, 0], [1, 0, 1], [0, 1, 1]]) == pytest.approx(0.15625 / 0.65625)


def test_bradley_terry_by_hand():
    s = stats.bradley_terry({("a", "b"): 3, ("b", "a"): 1})
    assert s["a"] / s["b"] == pytest.approx(3.0, rel=1e-6)  # the MLE of two players: the odds of their record
    s = stats.bradley_terry({("a", "b"): 1, ("b", "c"): 1, ("c", "a"): 1})
    assert s["a"] == pytest.approx(1 / 3) and s["b"] == pytest.approx(1 / 3)
    s = stats.bradley_terry({("a", "b"): 2, ("b", "a"): 1, ("b", "c"): 2, ("c", "b"): 1, ("a", "c"): 4, ("c", "a"): 1})
    assert s["a"] > s["b"] > s["c"] and sum(s.values()) == pytest.approx(1)


def test_summarize_counts_and_agreement():
    session = {"suite": "s", "evals": ["/e"], "criteria": ["follows the prompt"],
               "models": [{"key": "A", "label": "base-x", "role": "base", "run_id": "r", "eval": "/e"},
                          {"key": "B", "label": "ft-x", "role": "fine-tuned", "run_id": "r", "eval": "/e"}],
               "reviewers": {"alice": "t1", "bob": "t2"},
               "pairs": [{"id": "p0", "prompt_index": 0, "seed": 0, "prompt": "x"},
                         {"id": "p1", "prompt_index": 1, "seed": 0, "prompt": "y"}]}
    votes = [{"reviewer": "alice", "pair": "p0", "winner": "B", "criteria": {"follows the prompt": "B"}},
             {"reviewer": "bob", "pair": "p0", "winner": "B", "criteria": {"follows the prompt": "tie"}},
             {"reviewer": "alice", "pair": "p1", "winner": "A", "criteria": {"follows the prompt": "A"}},
             {"reviewer": "bob", "pair": "p1", "winner": "tie", "criteria": {"follows the prompt": "A"}}]
    s = summarize(session, votes)
    assert s["votes"] == 4 and s["wins"] == {"first": 1, "second": 2} and s["ties"] == 1
    assert s["win_rate"] == pytest.approx(2.5 / 4)
    assert s["per_reviewer"] == {"alice": 2, "bob": 2}
    assert [r["win_rate"] for r in s["per_prompt"]] == [1.0, 0.25]
    # alice B, A; bob B, tie: p_o 1/2, p_e (B 1*1 + A 1*0 + tie 0*1) / 4 = 1/4 -> Cohen (1/2 - 1/4) / (3/4) = 1/3
    assert s["agreement"]["cohen_kappa"]["alice|bob"]["kappa"] == pytest.approx(1 / 3)
    assert s["agreement"]["items_seen_by_several"] == 2
    assert s["criteria"]["follows the prompt"]["win_rate"] == pytest.approx(1.5 / 4)
