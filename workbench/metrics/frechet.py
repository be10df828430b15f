"""Frechet distance between Gaussians fitted to feature sets (the math behind FID/FVD).

Everything is computed in float64 with NumPy. The reference implementations
(StyleGAN-V ``src/metrics/frechet_video_distance.py``, pytorch-fid) take
``scipy.linalg.sqrtm(sigma1 @ sigma2)`` of a non-symmetric product and then drop
imaginary round-off. We compute the same trace through a symmetric PSD matrix
instead, which needs only ``numpy.linalg.eigh`` (no SciPy), has no imaginary
parts to discard, and stays accurate when covariances are rank-deficient.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _as_float64(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values; the features or statistics are corrupt.")
    return arr


def _check_square(mat: np.ndarray, name: str) -> None:
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {mat.shape}.")


def _psd_eigh(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigendecomposition of the symmetric part of ``m`` with round-off eigenvalues zeroed.

    Eigenvalues below ``max|w| * n * machine eps`` (numpy's matrix_rank
    tolerance) are numerically zero; left in, their square roots (~1e-8 * scale
    each) would bias traces of square roots of rank-deficient covariances.
    """
    w, v = np.linalg.eigh((m + m.T) / 2)
    tol = np.abs(w).max(initial=0.0) * m.shape[0] * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0), v


def sqrtm_psd(mat: ArrayLike) -> np.ndarray:
    """Principal square root of a symmetric positive semi-definite matrix, in float64.

    The input is symmetrised and eigendecomposed with ``eigh``; eigenvalues that
    are zero up to round-off (or slightly negative from it) are set to zero, so
    singular (rank-deficient) covariance matrices are handled.
    """
    m = _as_float64(mat, "mat")
    _check_square(m, "mat")
    w, v = _psd_eigh(m)
    return (v * np.sqrt(w)) @ v.T


def trace_sqrt_product(sigma1: ArrayLike, sigma2: ArrayLike) -> float:
    """``trace(sqrtm(sigma1 @ sigma2))`` for PSD ``sigma1``, ``sigma2``.

    ``sigma1 @ sigma2`` is similar to the symmetric PSD matrix
    ``S = sqrt(sigma1) @ sigma2 @ sqrt(sigma1)``, so both have the same
    non-negative eigenvalues and the trace is ``sum(sqrt(eigvals(S)))``.
    """
    s1 = _as_float64(sigma1, "sigma1")
    s2 = _as_float64(sigma2, "sigma2")
    root1 = sqrtm_psd(s1)
    eig, _ = _psd_eigh(root1 @ s2 @ root1)
    return float(np.sqrt(eig).sum())


def frechet_distance(
    mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, eps: float = 1e-6
) -> float:
    """Squared Frechet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 @ sigma2))``,
    computed in float64. If the eigendecomposition fails to converge, ``eps * I``
    is added to both covariances and the computation is retried (the offset
    pytorch-fid uses for near-singular products).
    """
    m1, m2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    s1, s2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of the same length, got {m1.shape} and {m2.shape}.")
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        _check_square(s, name)
        if s.shape[0] != m1.shape[0]:
            raise ValueError(f"{name} has shape {s.shape} but the means have length {m1.shape[0]}.")

    try:
        tr_covmean = trace_sqrt_product(s1, s2)
    except np.linalg.LinAlgError:
        offset = np.eye(s1.shape[0]) * eps
        tr_covmean = trace_sqrt_product(s1 + offset, s2 + offset)
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``features`` of shape (N, D), both float64.

    The covariance is the maximum-likelihood (divide by N) estimate, as in
    StyleGAN-V's ``FeatureStats.get_mean_cov`` (src/metrics/metric_utils.py),
    so FVD numbers match that reference.
    """
    x = _as_float64(features, "features")
    if x.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {x.shape}.")
    if x.shape[0] < 1:
        raise ValueError("features is empty; at least one sample is needed for statistics.")
    mu = x.mean(axis=0)
    centered = x - mu
    sigma = centered.T @ centered / x.shape[0]
    return mu, sigma
