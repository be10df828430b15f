"""Bootstrap confidence intervals for the evaluation metrics, resampling videos.

Method: the **percentile bootstrap** (Efron & Tibshirani, *An Introduction to the Bootstrap*,
1993, ch. 13). The videos (for FVD: their features; for CLIP score: their per-video scores) are
resampled with replacement ``num_resamples`` times, with NumPy's ``default_rng(seed)`` (PCG64),
so a seed gives the same interval every time; the statistic is recomputed on every resample and
the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of those
replicates (``numpy.quantile``, linear interpolation). ``value`` is always the statistic of the
full, unresampled data (for FVD exactly what ``FrechetVideoDistance.compute`` returns).

Why percentile: FVD has no variance formula to build a normal interval on, the percentile
interval respects monotone transformations and needs nothing but the replicates, and it is
the interval evaluation papers usually report. BCa would correct skew and bias but needs a
jackknife (N more FVDs) whose acceleration estimate is unstable for FVD, and the "basic"
interval can fall below zero for FVD.

What it says about FVD: duplicated videos lower the effective rank of a resample's covariance,
which raises FVD, so FVD replicates are biased upward, by about FVD's own small-sample bias
(which grows like D / N: D = 400 for I3D, 1408 for VideoMAE-v2). ``bias`` (mean of the
replicates minus ``value``) reports it. With N not far above D, that bias is larger than the
replicates' spread and the percentile interval lies entirely above the point estimate
(synthetic 400-d features, cached real statistics: N = 100, FVD 341, interval [428, 472];
N = 1000, FVD 45, interval [69, 74]). It then still measures how much FVD moves with the
choice of videos, not where FVD is. For such sets ``method="recentered"`` moves the percentile
interval down by ``bias`` (to ``[low - bias, high - bias]``, N = 1000 above: [43, 48]): an
interval for the expected FVD *at this N*, which is what FVDs at equal N are compared on, not
for the infinite-sample FVD (which FVD at a few thousand videos does not estimate without bias
anyway). A difference of two models' FVDs at equal N (``bootstrap_fvd_difference``) cancels
much of the bias but not all of it (same data, paired: bias -1.2 for an interval 2 wide, so
the percentile interval [-9.35, -7.38] just misses the value -7.14; recentered [-8.15, -6.18]).
For FVD, read ``bias`` next to the interval, and prefer ``method="recentered"`` when it is
not small against the interval's width. For means (CLIP score) the bias is ~0 and the two
methods agree.

The real set: with real features, the real videos are resampled too (independently of the
generated ones; the same real resample serves both models of a difference), because they are
a sample as well. With only cached statistics (``ReferenceStatistics`` or ``(mu, sigma)``, as
``workbench eval`` keeps them), the real side cannot be resampled and is held fixed: the
interval then leaves out the reference set's sampling variability and is narrower.

Pairing: two models evaluated on the same prompts with the same seeds give paired videos;
resampling the pairs (the same indices for both models) removes the between-prompt variance
from a difference. ``keys`` / ``base_keys`` (e.g. ``(prompt, seed)`` tuples) pair the rows;
without keys, ``paired=True`` pairs rows by position and ``paired=False`` resamples the two
models independently.

Speed: replicates are computed in batches without forming a resample's feature matrix. With
the real side fixed, ``tr sqrt(sigma_real @ sigma_b)`` is the sum of square roots of the
eigenvalues of an N x N Gram matrix (N <= rank of sigma_real) or of ``F^T sigma_b F`` with
``sigma_real = F F^T`` factored once; both are built from products precomputed once. With the
real side resampled too, the N_real x N cross-Gram is used while min(N_real, N) <= D, else a
Cholesky factor of each resample's real covariance. Means and traces need no decomposition.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from workbench.metrics.frechet import feature_statistics, frechet_distance

DEFAULT_CONFIDENCE = 0.95
DEFAULT_MEAN_RESAMPLES = 10_000
DEFAULT_FVD_RESAMPLES = 1_000
_CHUNK_BYTES = 64 * 2**20  # working memory per batch of replicates


@dataclass(frozen=True)
class BootstrapInterval:
    """A statistic with its percentile bootstrap interval.

    ``value``: the statistic of the full data; ``low``/``high``: the interval; ``n``: videos
    resampled (pairs for a paired difference; the first model's videos otherwise);
    ``n_base``: the second (base) model's videos in a difference; ``n_real``: real videos
    resampled for FVD, None when the real side was fixed statistics; ``bias``: mean of the
    replicates minus ``value`` (the bootstrap estimate of the statistic's bias).
    """

    value: float
    low: float
    high: float
    n: int
    num_resamples: int
    seed: int
    confidence: float = DEFAULT_CONFIDENCE
    method: str = "percentile"
    bias: float = 0.0
    paired: bool | None = None
    n_base: int | None = None
    n_real: int | None = None

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}] ({self.confidence:.0%} CI, n={self.n})"


# ------------------------------------------------------------------------------------- helpers


def _as_float64(x: Any, name: str, ndim: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != ndim:
        shape = "(N,)" if ndim == 1 else "(N, D)"
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values.")
    return arr


METHODS = ("percentile", "recentered")


def _check_args(num_resamples: int, confidence: float, method: str = "percentile") -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if int(num_resamples) != num_resamples or num_resamples < 1:
        raise ValueError(f"num_resamples must be a positive integer, got {num_resamples}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")


def _interval(
    value: float, reps: np.ndarray, n: int, num_resamples: int, seed: int, confidence: float, method: str,
    **extra: Any,
) -> BootstrapInterval:
    alpha = 1.0 - confidence
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    bias = float(reps.mean() - value)
    if method == "recentered":
        low, high = low - bias, high - bias
    return BootstrapInterval(
        value=float(value),
        low=float(low),
        high=float(high),
        n=n,
        num_resamples=int(num_resamples),
        seed=seed,
        confidence=confidence,
        method=method,
        bias=bias,
        **extra,
    )


def _chunks(num_resamples: int, bytes_per_resample: int) -> list[int]:
    size = int(max(1, min(num_resamples, _CHUNK_BYTES // max(1, bytes_per_resample))))
    return [min(size, num_resamples - s) for s in range(0, num_resamples, size)]


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Resample indices (b, m) in [0, n) -> how often each row was drawn, (b, n) float64."""
    b = idx.shape[0]
    flat = (idx + (np.arange(b) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def pair_by_key(keys: Sequence[Hashable], base_keys: Sequence[Hashable]) -> np.ndarray:
    """Indices ``perm`` with ``base_keys[perm[i]] == keys[i]``: rows of two models paired by key.

    Keys are e.g. ``(prompt, seed)`` tuples; both lists must hold the same keys, each once.
    """
    keys, base_keys = list(keys), list(base_keys)
    where = {}
    for i, k in enumerate(base_keys):
        if k in where:
            raise ValueError(f"base key {k!r} occurs twice; pairing needs unique (prompt, seed) keys.")
        where[k] = i
    if len(set(keys)) != len(keys):
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise ValueError(f"key {dup!r} occurs twice; pairing needs unique (prompt, seed) keys.")
    missing = [k for k in keys if k not in where]
    extra = set(where) - set(keys)
    if missing or extra:
        what = f"{missing[0]!r} has no base video" if missing else f"base video {next(iter(extra))!r} has no partner"
        raise ValueError(
            f"cannot pair the two models' videos: {what} ({len(missing)} unpaired, {len(extra)} base unpaired); "
            "evaluate both on the same prompts and seeds, or use paired=False."
        )
    return np.array([where[k] for k in keys], dtype=np.int64)


def _pairing(
    n: int,
    n_base: int,
    paired: bool | None,
    keys: Sequence[Hashable] | None,
    base_keys: Sequence[Hashable] | None,
) -> tuple[bool, np.ndarray | None]:
    """(paired, permutation of the base rows) from the arguments (module doc, "Pairing")."""
    if (keys is None) != (base_keys is None):
        raise ValueError("pass both keys and base_keys (e.g. (prompt, seed) of every video), or neither.")
    if keys is not None and (len(keys) != n or len(base_keys) != n_base):
        raise ValueError(f"got {len(keys)} keys for {n} videos and {len(base_keys)} base keys for {n_base}.")
    if paired is None:
        paired = keys is not None
    if not paired:
        return False, None
    if keys is not None:
        return True, pair_by_key(keys, base_keys)
    if n != n_base:
        raise ValueError(f"paired resampling needs as many videos of both models, got {n} and {n_base}.")
    return True, np.arange(n)


# ---------------------------------------------------------------------------------- means (CLIP)


def bootstrap_mean(
    values: Any,
    *,
    num_resamples: int = DEFAULT_MEAN_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    method: str = "percentile",
) -> BootstrapInterval:
    """Percentile bootstrap interval of the mean of ``values`` (N,), e.g. per-video CLIP scores."""
    x = _as_float64(values, "values", 1)
    _check_args(num_resamples, confidence, method)
    n = x.shape[0]
    if n < 1:
        raise ValueError("values is empty.")
    rng = np.random.default_rng(seed)
    reps = np.concatenate([x[rng.integers(0, n, size=(b, n))].mean(1) for b in _chunks(num_resamples, 16 * n)])
    return _interval(x.mean(), reps, n, num_resamples, seed, confidence, method)


def bootstrap_difference(
    values: Any,
    base_values: Any,
    *,
    paired: bool | None = None,
    keys: Sequence[Hashable] | None = None,
    base_keys: Sequence[Hashable] | None = None,
    num_resamples: int = DEFAULT_MEAN_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    method: str = "percentile",
) -> BootstrapInterval:
    """Interval of ``mean(values) - mean(base_values)`` (e.g. fine-tuned minus base CLIP score).

    Paired (``keys``/``base_keys`` given, or ``paired=True`` for rows already in the same
    order): the pairs are resampled, i.e. the mean of the per-pair differences. Unpaired
    (``paired=False``, or no keys): each model's values are resampled independently.
    """
    x = _as_float64(values, "values", 1)
    y = _as_float64(base_values, "base_values", 1)
    _check_args(num_resamples, confidence, method)
    n, m = x.shape[0], y.shape[0]
    if n < 1 or m < 1:
        raise ValueError("values and base_values must not be empty.")
    is_paired, perm = _pairing(n, m, paired, keys, base_keys)
    rng = np.random.default_rng(seed)
    if is_paired:
        d = x - y[perm]
        reps = np.concatenate([d[rng.integers(0, n, size=(b, n))].mean(1) for b in _chunks(num_resamples, 16 * n)])
        return _interval(d.mean(), reps, n, num_resamples, seed, confidence, method, paired=True, n_base=n)
    parts = []
    for b in _chunks(num_resamples, 16 * (n + m)):
        ix, iy = rng.integers(0, n, size=(b, n)), rng.integers(0, m, size=(b, m))
        parts.append(x[ix].mean(1) - y[iy].mean(1))
    return _interval(x.mean() - y.mean(), np.concatenate(parts), n, num_resamples, seed, confidence, method,
                     paired=False, n_base=m)


# ------------------------------------------------------------------------------------------- FVD


def _sum_sqrt_eigvals(mats: np.ndarray) -> np.ndarray:
    """sum(sqrt(eigenvalues)) of each symmetric PSD matrix in (b, m, m), round-off eigenvalues
    (below max|w| * m * eps, as ``frechet._psd_eigh``) set to zero."""
    w = np.linalg.eigvalsh(mats)
    tol = np.abs(w).max(axis=1, keepdims=True) * mats.shape[-1] * np.finfo(np.float64).eps
    return np.sqrt(np.where(w > tol, w, 0.0)).sum(axis=1)


def _psd_factor(sigma: np.ndarray) -> np.ndarray:
    """F (D, k) with F @ F.T == sigma, k = numerical rank (eigenvectors of the non-zero eigenvalues)."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    keep = w > np.abs(w).max(initial=0.0) * sigma.shape[0] * np.finfo(np.float64).eps
    return v[:, keep] * np.sqrt(w[keep])


def _cholesky_factors(sigmas: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors (b, D, D); a singular matrix gets an eigendecomposition factor instead."""
    try:
        return np.linalg.cholesky(sigmas)
    except np.linalg.LinAlgError:
        out = np.zeros_like(sigmas)
        for i, s in enumerate(sigmas):
            try:
                out[i] = np.linalg.cholesky(s)
            except np.linalg.LinAlgError:
                f = _psd_factor(s)
                out[i, :, : f.shape[1]] = f
        return out


class _FeatureSet:
    """Features (n, D) (already shifted) and what every resample's moments need."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.n = x.shape[0]
        self.sq = np.einsum("ij,ij->i", x, x)

    def moments(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means (b, D) and covariance traces (b,) of the resamples with counts w (b, n)."""
        mu = w @ self.x / self.n
        return mu, w @ self.sq / self.n - np.einsum("ij,ij->i", mu, mu)

    def covariances(self, w: np.ndarray, mu: np.ndarray) -> np.ndarray:
        xw = np.sqrt(w)[:, :, None] * self.x[None]
        return xw.transpose(0, 2, 1) @ xw / self.n - mu[:, :, None] * mu[:, None, :]


class _FixedReal:
    """Real side held fixed: sigma_real = F F^T factored once; per model, Z = X F (and Z Z^T)."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray) -> None:
        self.mu, self.factor, self.trace = mu, _psd_factor(sigma), float(np.trace(sigma))

    def prepare(self, fs: _FeatureSet) -> tuple[np.ndarray, np.ndarray | None]:
        z = fs.x @ self.factor
        return z, (z @ z.T if fs.n <= z.shape[1] else None)

    def trace_sqrt(self, fs: _FeatureSet, prep: tuple, w: np.ndarray) -> np.ndarray:
        z, gram = prep
        nu = w @ z / fs.n  # (b, k): F^T mu_b
        sw = np.sqrt(w)
        if gram is not None:  # N x N: sqrt(w_i w_j) (z_i - nu).(z_j - nu) / N
            a = nu @ z.T
            c = np.einsum("ij,ij->i", nu, nu)
            g = gram[None] - a[:, :, None] - a[:, None, :] + c[:, None, None]
            g *= sw[:, :, None] * sw[:, None, :] / fs.n
        else:  # k x k: F^T sigma_b F
            zw = sw[:, :, None] * z[None]
            g = zw.transpose(0, 2, 1) @ zw / fs.n - nu[:, :, None] * nu[:, None, :]
        return _sum_sqrt_eigvals(g)


def _trace_sqrt_both(
    real: _FeatureSet, fake: _FeatureSet, cross: np.ndarray | None,
    wr: np.ndarray, mr: np.ndarray, wf: np.ndarray, mf: np.ndarray,
) -> np.ndarray:
    """tr sqrt(sigma_r sigma_f) for resamples of both sets (cross = X_r X_f^T when used)."""
    if cross is not None:  # singular values of the (N_r x N_f) weighted centred cross-Gram
        p = mf @ real.x.T  # (b, N_r)
        q = mr @ fake.x.T  # (b, N_f)
        s = np.einsum("ij,ij->i", mr, mf)
        m = cross[None] - p[:, :, None] - q[:, None, :] + s[:, None, None]
        m *= np.sqrt(wr)[:, :, None] * np.sqrt(wf)[:, None, :] / np.sqrt(real.n * fake.n)
        g = m.transpose(0, 2, 1) @ m if fake.n <= real.n else m @ m.transpose(0, 2, 1)
        return _sum_sqrt_eigvals(g)
    lr = _cholesky_factors(real.covariances(wr, mr))
    return _sum_sqrt_eigvals(lr.transpose(0, 2, 1) @ fake.covariances(wf, mf) @ lr)


def _real_spec(real: Any, dim: int) -> tuple[str, Any]:
    """("stats", (mu, sigma)) or ("features", array) from ReferenceStatistics, (mu, sigma) or features."""
    if hasattr(real, "mu") and hasattr(real, "sigma"):
        mu, sigma = real.mu, real.sigma
    elif isinstance(real, (tuple, list)) and len(real) == 2 and np.ndim(real[0]) == 1 and np.ndim(real[1]) == 2:
        mu, sigma = real
    else:
        feats = _as_float64(real, "real features", 2)
        if feats.shape[1] != dim:
            raise ValueError(f"real features have {feats.shape[1]} dims, the generated {dim}.")
        return "features", feats
    mu, sigma = _as_float64(mu, "real mu", 1), _as_float64(sigma, "real sigma", 2)
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        raise ValueError(f"real statistics have shapes {mu.shape}, {sigma.shape}; the generated features {dim} dims.")
    return "stats", (mu, sigma)


def _point_fvd(real_kind: str, real: Any, fake: np.ndarray) -> float:
    mu_r, sigma_r = real if real_kind == "stats" else feature_statistics(real)
    return frechet_distance(mu_r, sigma_r, *feature_statistics(fake))


def _fvd_replicates(
    real_kind: str, real: Any, fakes: list[np.ndarray], num_resamples: int, seed: int, paired: bool
) -> tuple[list[np.ndarray], bool]:
    """Bootstrap FVD replicates (one array per feature set in ``fakes``).

    Indices are drawn per batch from ``default_rng(seed)``: the generated sets' (one draw shared
    by all sets when ``paired``, else one per set, in order), then the real set's.
    """
    shift = fakes[0].mean(axis=0)  # translation-invariant; keeps the moment sums well conditioned
    sets = [_FeatureSet(f - shift) for f in fakes]
    d = fakes[0].shape[1]
    resample_real = real_kind == "features"
    if resample_real:
        rs = _FeatureSet(real - shift)
        tr_cross = [rs.x @ fs.x.T if min(rs.n, fs.n) <= d else None for fs in sets]
    else:
        fixed = _FixedReal(real[0] - shift, real[1])
        preps = [fixed.prepare(fs) for fs in sets]
        k = fixed.factor.shape[1]

    n_max = max(fs.n for fs in sets)
    if resample_real:
        small = min(rs.n, n_max)
        per = 8 * 4 * max(rs.n * n_max + small * small if small <= d else 3 * (max(rs.n, n_max) * d + d * d), 1)
    else:
        per = 8 * 4 * max((n_max * n_max) if n_max <= k else (n_max * k + k * k), 1)
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in sets]
    for b in _chunks(num_resamples, per):
        if paired:
            w = _counts(rng.integers(0, sets[0].n, size=(b, sets[0].n)), sets[0].n)
            ws = [w] * len(sets)
        else:
            ws = [_counts(rng.integers(0, fs.n, size=(b, fs.n)), fs.n) for fs in sets]
        if resample_real:
            wr = _counts(rng.integers(0, rs.n, size=(b, rs.n)), rs.n)
            mr, trr = rs.moments(wr)
        for i, (fs, w) in enumerate(zip(sets, ws)):
            mf, trf = fs.moments(w)
            if resample_real:
                ts = _trace_sqrt_both(rs, fs, tr_cross[i], wr, mr, w, mf)
                mean_term = np.einsum("ij,ij->i", mf - mr, mf - mr)
                out[i].append(mean_term + trr + trf - 2 * ts)
            else:
                ts = fixed.trace_sqrt(fs, preps[i], w)
                diff = mf - fixed.mu[None]
                out[i].append(np.einsum("ij,ij->i", diff, diff) + fixed.trace + trf - 2 * ts)
    return [np.concatenate(o) for o in out], resample_real


def _fvd_inputs(fake_features: Any, real: Any, resample_real: bool, name: str = "fake_features"):
    fake = _as_float64(fake_features, name, 2)
    if fake.shape[0] < 2:
        raise ValueError(f"FVD needs at least 2 generated videos, got {fake.shape[0]}.")
    kind, spec = _real_spec(real, fake.shape[1])
    if kind == "features":
        if spec.shape[0] < 2:
            raise ValueError(f"FVD needs at least 2 real videos, got {spec.shape[0]}.")
        if not resample_real:
            kind, spec = "stats", feature_statistics(spec)
    return fake, kind, spec


def bootstrap_fvd(
    fake_features: Any,
    real: Any,
    *,
    resample_real: bool = True,
    num_resamples: int = DEFAULT_FVD_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    method: str = "percentile",
) -> BootstrapInterval:
    """Percentile bootstrap interval of FVD, resampling the generated videos.

    Args:
        fake_features: (N, D) per-video features of the generated videos (e.g.
            ``FrechetVideoDistance.features()``).
        real: ``ReferenceStatistics``, a ``(mu, sigma)`` pair, or real features (N_real, D).
            Real features are resampled too (unless ``resample_real=False``); statistics are
            held fixed, so the interval then leaves out the reference set's variability.
        method: "percentile" (default) or "recentered" (the percentile interval moved down by
            ``bias``; see the module doc: with N not well above D the percentile interval lies
            above the point estimate).
    ``value`` equals ``FrechetVideoDistance.compute()`` for the same features; ``n_real`` is
    the number of real videos resampled, None when the real side was fixed.
    """
    _check_args(num_resamples, confidence, method)
    fake, kind, spec = _fvd_inputs(fake_features, real, resample_real)
    (reps,), resampled = _fvd_replicates(kind, spec, [fake], num_resamples, seed, paired=False)
    return _interval(
        _point_fvd(kind, spec, fake), reps, fake.shape[0], num_resamples, seed, confidence, method,
        n_real=spec.shape[0] if resampled else None,
    )


def bootstrap_fvd_difference(
    fake_features: Any,
    base_features: Any,
    real: Any,
    *,
    paired: bool | None = None,
    keys: Sequence[Hashable] | None = None,
    base_keys: Sequence[Hashable] | None = None,
    resample_real: bool = True,
    num_resamples: int = DEFAULT_FVD_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    method: str = "percentile",
) -> BootstrapInterval:
    """Interval of ``FVD(fake_features) - FVD(base_features)`` against the same real set
    (e.g. fine-tuned minus base: negative is better).

    FVD is a statistic of a whole set, not a mean of per-video values, so each replicate is the
    difference of two resampled FVDs. When the videos are paired (``keys``/``base_keys``, e.g.
    ``(prompt, seed)``, or ``paired=True`` for rows in the same order), both models' videos are
    resampled with the same indices; otherwise (``paired=False`` or no keys) independently. The
    real side is resampled once per replicate for both (features) or held fixed (statistics).
    ``method`` as for ``bootstrap_fvd``; the bias of a difference is smaller but not always
    negligible (module doc).
    """
    _check_args(num_resamples, confidence, method)
    fake, kind, spec = _fvd_inputs(fake_features, real, resample_real)
    base = _as_float64(base_features, "base_features", 2)
    if base.shape[1] != fake.shape[1]:
        raise ValueError(f"base_features have {base.shape[1]} dims, fake_features {fake.shape[1]}.")
    if base.shape[0] < 2:
        raise ValueError(f"FVD needs at least 2 base videos, got {base.shape[0]}.")
    is_paired, perm = _pairing(fake.shape[0], base.shape[0], paired, keys, base_keys)
    if is_paired:
        base = base[perm]
    (ra, rb), resampled = _fvd_replicates(kind, spec, [fake, base], num_resamples, seed, paired=is_paired)
    value = _point_fvd(kind, spec, fake) - _point_fvd(kind, spec, base)
    return _interval(
        value, ra - rb, fake.shape[0], num_resamples, seed, confidence, method,
        paired=is_paired, n_base=base.shape[0], n_real=spec.shape[0] if resampled else None,
    )
