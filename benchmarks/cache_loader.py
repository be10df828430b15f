"""Data-loader throughput from a ``workbench prepare`` cache at CogVideoX-2B's real sizes (CPU).

Writes N cache shards of the real shapes (latent distribution 32 x 13 x 60 x 90 and T5 embedding
226 x 4096, bf16, as ``prepare`` stores them for 49 x 480 x 720) with the cache's own writer, then
times the DataLoader the training run uses (CachedLatentDataset + GlobalBatchSampler) over them.

    python benchmarks/cache_loader.py --samples 64 --workers 0 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch


def write_cache(directory: Path, n: int) -> None:
    from workbench.common import atomic_write_json
    from workbench.data.cache import CacheKey, _atomic_safetensors, shard_path

    (directory / "shards").mkdir(parents=True)
    key = CacheKey(model="benchmark", vae_config_sha256="-", text_encoder_config_sha256="-", num_frames=49,
                   height=480, width=720, fps=8.0, max_text_len=226)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        _atomic_safetensors(shard_path(directory, i), {
            "latent_dist": torch.randn(32, 13, 60, 90, generator=g).bfloat16(),
            "prompt_embeds": torch.randn(226, 4096, generator=g).bfloat16()})
    _atomic_safetensors(directory / "empty_prompt.safetensors", {"prompt_embeds": torch.zeros(226, 4096).bfloat16()})
    entries = [{"file_name": f"v{i}.mp4", "caption": f"clip {i}", "shard": shard_path(directory, i).name}
               for i in range(n)]
    atomic_write_json(directory / "index.json", {"key": asdict(key), "complete": True, "num_entries": n,
                                            "entries": entries, "failed": {}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    from torch.utils.data import DataLoader

    from workbench.data.cache import CachedLatentDataset
    from workbench.data.batching import GlobalBatchSampler

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        write_cache(cache, args.samples)
        size = sum(f.stat().st_size for f in (cache / "shards").iterdir()) / args.samples / 2**20
        print(f"{args.samples} shards of {size:.1f} MiB (49x480x720 latents + T5 embedding, bf16)")
        dataset = CachedLatentDataset(cache)
        for workers in args.workers:
            loader = DataLoader(dataset, batch_sampler=GlobalBatchSampler(len(dataset), args.batch_size, seed=0),
                                num_workers=workers, collate_fn=dataset.collate)
            for _ in loader:  # warm the page cache and the workers
                break
            t0 = time.perf_counter()
            n = sum(len(batch["caption"]) for batch in loader)
            dt = time.perf_counter() - t0
            print(f"workers={workers}: {n / dt:8.1f} samples/s ({n} samples in {dt:.2f} s)")


if __name__ == "__main__":
    main()
