"""Unit tests for workbench.metrics.bootstrap: known answers, determinism, pairing, FVD replicates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.metrics import (
    BootstrapInterval,
    ReferenceStatistics,
    bootstrap_difference,
    bootstrap_fvd,
    bootstrap_fvd_difference,
    bootstrap_mean,
    feature_statistics,
    frechet_distance,
    pair_by_key,
)


def _features(rng: np.random.Generator, n: int, d: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    mix = np.linspace(0.5, 1.5, d)
    return (rng.standard_normal((n, d)) * mix) * scale + shift


# --- means (CLIP score) ------------------------------------------------------------------------


def test_mean_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    reps = 200
    for i in range(reps):
        x = rng.normal(loc=3.0, scale=2.0, size=40)
        ci = bootstrap_mean(x, num_resamples=1000, seed=i)
        assert ci.low <= ci.value <= ci.high and ci.value == pytest.approx(x.mean())
        covered += ci.contains(3.0)
    assert 0.90 <= covered / reps <= 0.99, covered


def test_mean_interval_is_deterministic_for_a_seed():
    x = np.random.default_rng(1).normal(size=57)
    a, b = bootstrap_mean(x, seed=7), bootstrap_mean(torch.tensor(x), seed=7)
    assert a == b
    assert isinstance(a, BootstrapInterval) and (a.n, a.num_resamples, a.seed, a.confidence) == (57, 10_000, 7, 0.95)
    assert a.method == "percentile" and abs(a.bias) < 0.05
    c = bootstrap_mean(x, seed=8)
    assert (c.low, c.high) != (a.low, a.high) and c.value == a.value
    wide = bootstrap_mean(x, seed=7, confidence=0.99)
    assert wide.low < a.low and wide.high > a.high
    assert set(a.as_dict()) >= {"value", "low", "high", "n", "num_resamples", "seed", "confidence", "method"}


def test_paired_difference_is_narrower_than_unpaired_on_correlated_data():
    rng = np.random.default_rng(2)
    prompt_effect = rng.normal(scale=5.0, size=80)  # most of the variance is the prompt's
    base = 25 + prompt_effect + rng.normal(scale=0.5, size=80)
    tuned = base + 0.4 + rng.normal(scale=0.5, size=80)
    paired = bootstrap_difference(tuned, base, paired=True, seed=0)
    unpaired = bootstrap_difference(tuned, base, paired=False, seed=0)
    assert paired.value == pytest.approx(unpaired.value) == pytest.approx(tuned.mean() - base.mean())
    assert paired.paired is True and unpaired.paired is False and paired.n == paired.n_base == 80
    assert paired.width < 0.25 * unpaired.width
    assert paired.low > 0 > unpaired.low  # the paired design resolves the +0.4; the unpaired one does not


def test_difference_pairs_by_prompt_and_seed():
    rng = np.random.default_rng(3)
    keys = [(f"prompt {i // 2}", i % 2) for i in range(30)]
    base = rng.normal(size=30) * 4
    tuned = base + 1 + rng.normal(scale=0.1, size=30)
    order = rng.permutation(30)
    shuffled_keys = [keys[i] for i in order]
    by_key = bootstrap_difference(tuned, base[order], keys=keys, base_keys=shuffled_keys, seed=4)
    by_position = bootstrap_difference(tuned, base, paired=True, seed=4)
    assert by_key == by_position and by_key.paired
    assert np.array_equal(base[order][pair_by_key(keys, shuffled_keys)], base)
    with pytest.raises(ValueError, match="no base video"):
        pair_by_key(keys, shuffled_keys[:-1] + [("another prompt", 0)])
    with pytest.raises(ValueError, match="twice"):
        pair_by_key(keys, shuffled_keys[:-1] + [shuffled_keys[0]])
    with pytest.raises(ValueError, match="as many videos"):
        bootstrap_difference(tuned, base[:20], paired=True)
    assert not bootstrap_difference(tuned, base[:20]).paired  # no keys: independent resampling


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="num_resamples"):
        bootstrap_mean([1.0, 2.0], num_resamples=0)
    with pytest.raises(ValueError, match="method"):
        bootstrap_mean([1.0, 2.0], method="bca")
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean([1.0, float("nan")])
    with pytest.raises(ValueError, match="keys"):
        bootstrap_difference([1.0], [2.0], keys=[("a", 0)])


# --- FVD -----------------------------------------------------------------------------------------


def _naive_fvd_replicates(fake, real, num_resamples, seed, resample_real):
    """Each resample's features materialised and passed through the reference Frechet code, with the
    index draws bootstrap_fvd makes (one batch: generated indices, then real indices)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(fake), size=(num_resamples, len(fake)))
    ridx = rng.integers(0, len(real), size=(num_resamples, len(real))) if resample_real else None
    stats = feature_statistics(real)
    out = []
    for b in range(num_resamples):
        r = feature_statistics(real[ridx[b]]) if resample_real else stats
        out.append(frechet_distance(*r, *feature_statistics(fake[idx[b]])))
    return np.array(out)


@pytest.mark.parametrize(("n", "n_real", "d"), [(30, 50, 8), (12, 40, 20), (60, 15, 20), (40, 60, 10)])
@pytest.mark.parametrize("resample_real", [False, True])
def test_fvd_replicates_equal_the_reference_computation(n, n_real, d, resample_real):
    rng = np.random.default_rng(4)
    fake, real = _features(rng, n, d, 1.2, 0.3), _features(rng, n_real, d)
    ci = bootstrap_fvd(fake, real if resample_real else feature_statistics(real), num_resamples=50, seed=3)
    naive = _naive_fvd_replicates(fake, real, 50, 3, resample_real)
    low, high = np.quantile(naive, [0.025, 0.975])
    assert ci.low == pytest.approx(low, rel=1e-9) and ci.high == pytest.approx(high, rel=1e-9)
    assert ci.bias == pytest.approx(naive.mean() - ci.value, rel=1e-9)
    assert ci.value == pytest.approx(frechet_distance(*feature_statistics(real), *feature_statistics(fake)), rel=1e-12)
    assert ci.n_real == (n_real if resample_real else None)


def test_fvd_replicates_with_rank_deficient_features():
    """Features in a 3-d subspace of 8 dims with N > D: singular covariances (no Cholesky factor)."""
    rng = np.random.default_rng(8)
    basis = rng.standard_normal((3, 8))
    fake, real = rng.standard_normal((30, 3)) @ basis + 0.2, rng.standard_normal((50, 3)) @ basis
    for resample_real in (False, True):
        ci = bootstrap_fvd(fake, real if resample_real else feature_statistics(real), num_resamples=40, seed=5)
        naive = _naive_fvd_replicates(fake, real, 40, 5, resample_real)
        np.testing.assert_allclose([ci.low, ci.high], np.quantile(naive, [0.025, 0.975]), rtol=1e-8)


def test_fvd_interval_contains_the_point_estimate_with_enough_videos():
    rng = np.random.default_rng(5)
    d = 6
    fake, real = _features(rng, 600, d, 1.3, 0.2), _features(rng, 800, d)
    stats = ReferenceStatistics(*feature_statistics(real), num_samples=800, detector_sha256="x" * 64)
    for real_side in (stats, real, torch.tensor(real)):
        ci = bootstrap_fvd(torch.tensor(fake), real_side, num_resamples=400, seed=1)
        assert ci.low < ci.value < ci.high, ci
    fixed = bootstrap_fvd(fake, stats, num_resamples=400, seed=1)
    both = bootstrap_fvd(fake, real, num_resamples=400, seed=1)
    assert fixed.n_real is None and both.n_real == 800
    assert both.width > fixed.width  # the real set's sampling variability is included
    assert bootstrap_fvd(fake, real, num_resamples=400, seed=1) == both  # deterministic
    assert bootstrap_fvd(fake, real, resample_real=False, num_resamples=400, seed=1).n_real is None


def test_fvd_bias_with_few_videos_and_the_recentered_interval():
    """With N close to D, resampling inflates FVD more than it spreads it: the percentile interval lies
    above the point estimate; the recentered one (shifted down by the bias) is around it."""
    rng = np.random.default_rng(6)
    d = 40
    fake, real = _features(rng, 50, d, 1.1), _features(rng, 500, d)
    stats = feature_statistics(real)
    pct = bootstrap_fvd(fake, stats, num_resamples=300, seed=0)
    rec = bootstrap_fvd(fake, stats, num_resamples=300, seed=0, method="recentered")
    assert pct.bias > 0 and pct.low > pct.value
    assert rec.low < rec.value < rec.high and rec.method == "recentered"
    assert rec.width == pytest.approx(pct.width) and rec.low == pytest.approx(pct.low - pct.bias)


def test_fvd_difference_paired_and_unpaired():
    rng = np.random.default_rng(7)
    d, n = 8, 300
    shared = rng.standard_normal((n, d))  # the same prompts and seeds: correlated features
    tuned = shared + 0.3 * rng.standard_normal((n, d))
    base = 1.1 * shared + 0.3 * rng.standard_normal((n, d)) + 0.15
    real = _features(rng, 400, d, 0.9)
    stats = feature_statistics(real)
    fvd_tuned = frechet_distance(*stats, *feature_statistics(tuned))
    expected = fvd_tuned - frechet_distance(*stats, *feature_statistics(base))
    paired = bootstrap_fvd_difference(tuned, base, stats, paired=True, num_resamples=300, seed=2)
    unpaired = bootstrap_fvd_difference(tuned, base, stats, paired=False, num_resamples=300, seed=2)
    assert paired.value == pytest.approx(expected, rel=1e-10) == unpaired.value
    assert paired.paired and not unpaired.paired and paired.n_real is None
    assert paired.width < 0.6 * unpaired.width
    assert paired.low < paired.value < paired.high and paired.high < 0  # tuned is closer to the real set

    keys = [(f"p{i}", 0) for i in range(n)]
    order = rng.permutation(n)
    by_key = bootstrap_fvd_difference(tuned, base[order], stats, keys=keys, base_keys=[keys[i] for i in order],
                                      num_resamples=300, seed=2)
    assert by_key.value == pytest.approx(paired.value, rel=1e-12)
    assert by_key.low == pytest.approx(paired.low, rel=1e-9) and by_key.high == pytest.approx(paired.high, rel=1e-9)
    with_real = bootstrap_fvd_difference(tuned, base, real, paired=True, num_resamples=300, seed=2)
    assert with_real.n_real == 400 and with_real.value == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="dims"):
        bootstrap_fvd_difference(tuned, base[:, :4], stats)
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_fvd(tuned[:1], stats)
