"""How biased FVD is at small N: two independent samples of ONE distribution, FVD between them, per N.

The true distance is 0; what is measured is pure small-sample bias. Two feature spaces (CPU, a minute):

* the shapes world's learned detector (workbench/shapes/weights/metric-nets/shapes-i3d.pt, 400-d, StyleGAN-V's
  I3D calling convention) on rendered clips of the whole world, two disjoint sets of seeds;
* 400-d Gaussian features with a power-law spectrum (eigenvalue k ~ k^-1), a stand-in for I3D's, where the
  real I3D cannot be downloaded.

    python benchmarks/fvd_bias.py [--max-n 2048] [--repeats 3] [--out benchmarks/results/fvd_bias.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.metrics.frechet import feature_statistics, frechet_distance  # noqa: E402

SIZES = (64, 128, 256, 401, 512, 1024, 2048)


def shapes_features(n: int, seed: int, batch: int = 64) -> np.ndarray:
    from workbench.metrics.fvd import DETECTOR_KWARGS, video_to_i3d_input
    from workbench.shapes.miniature import DETECTOR_PATH
    from workbench.shapes.world import COLOURS, SceneSampler, render

    detector = torch.jit.load(str(DETECTOR_PATH)).eval()
    scenes = SceneSampler(colours=tuple(COLOURS), seed=seed).scenes(n)
    out = []
    with torch.no_grad():
        for i in range(0, n, batch):
            clips = np.stack([render(s, 16, 64, 64) for s in scenes[i:i + batch]])  # (B, F, H, W, 3)
            videos = torch.from_numpy(clips).permute(0, 1, 4, 2, 3)  # (B, F, C, H, W) uint8
            out.append(detector(video_to_i3d_input(videos), **DETECTOR_KWARGS).double().numpy())
    return np.concatenate(out)


def gaussian_features(n: int, seed: int, dim: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.sqrt(1.0 / np.arange(1, dim + 1))
    return rng.standard_normal((n, dim)) * scale


def fvd(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, sigma_a = feature_statistics(torch.from_numpy(a))
    mu_b, sigma_b = feature_statistics(torch.from_numpy(b))
    return float(frechet_distance(mu_a, sigma_a, mu_b, sigma_b))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-n", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/fvd_bias.json")
    a = p.parse_args()
    sizes = [n for n in SIZES if n <= a.max_n]
    t0 = time.perf_counter()
    rows = {"shapes_detector": {}, "gaussian_power_law": {}}
    for r in range(a.repeats):
        pools = {"shapes_detector": (shapes_features(a.max_n, 100 + 2 * r), shapes_features(a.max_n, 101 + 2 * r)),
                 "gaussian_power_law": (gaussian_features(a.max_n, 2 * r), gaussian_features(a.max_n, 2 * r + 1))}
        for space, (x, y) in pools.items():
            for n in sizes:
                rows[space].setdefault(n, []).append(fvd(x[:n], y[:n]))
    result = {space: {str(n): {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                      for n, v in by_n.items()} for space, by_n in rows.items()}
    result["repeats"], result["seconds"] = a.repeats, round(time.perf_counter() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| N | shapes detector | Gaussian, power-law spectrum |\n|---|---|---|")
    for n in sizes:
        s, g = result["shapes_detector"][str(n)], result["gaussian_power_law"][str(n)]
        print(f"| {n} | {s['mean']:.2f} ({s['min']:.2f}-{s['max']:.2f}) | {g['mean']:.2f} ({g['min']:.2f}-{g['max']:.2f}) |")
    print(f"({a.repeats} repeats, {result['seconds']} s)")


if __name__ == "__main__":
    main()
