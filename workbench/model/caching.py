"""Approximate inference levers: diffusers' caching hooks on the CogVideoX transformer, named by a short spec.

A suite (or ``workbench eval --approximate``) names one; it is recorded in the results with the metrics it gave,
so a faster evaluation is never mistaken for an exact one. None is the default. What each costs in quality on
the shapes world, and what it saves, is measured by ``benchmarks/approximate_levers.py`` (docs/performance.md).

- ``first-block-cache[:THRESHOLD]``: diffusers' FirstBlockCacheConfig (ParaAttention's dynamic caching): the
  whole stack after the first block is skipped at a step where the first block's residual changed by less than
  THRESHOLD (relative mean absolute change; default 0.05) since the last full step, reusing the cached residual.
  THRESHOLD 0 never skips: the output equals stock.
- ``pab[:N]``: Pyramid Attention Broadcast (diffusers' PyramidAttentionBroadcastConfig): each block's
  attention output is recomputed every N-th step (default 2) between timesteps 100 and 800, and reused between.
- ``faster-cache``: FasterCache (diffusers' FasterCacheConfig) with the CogVideoX settings of diffusers'
  documentation: attention reused every 2nd step below t=681, its low and high frequencies reweighted.

Fewer steps or another solver are the suite's own ``num_inference_steps`` and ``scheduler``, not a spec here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

KINDS = ("first-block-cache", "pab", "faster-cache")
EXAMPLES = "first-block-cache, first-block-cache:0.1, pab, pab:3, faster-cache"


class ApproximationError(ValueError):
    """A spec that names no lever or gives it a bad parameter; the message lists the valid ones."""


def parse_approximation(spec: str) -> tuple[str, float | int | None]:
    """``"pab:3"`` -> ``("pab", 3)``; ``"first-block-cache"`` -> ``("first-block-cache", None)`` (the default)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ApproximationError(f"approximate={spec!r}: name a lever ({EXAMPLES})")
    kind, _, param = spec.strip().partition(":")
    if kind not in KINDS:
        raise ApproximationError(f"approximate={spec!r}: unknown lever {kind!r}; choose one of {EXAMPLES}")
    if not param:
        return kind, None
    try:
        if kind == "first-block-cache":
            value = float(param)
            ok = value >= 0
        elif kind == "pab":
            value = int(param)
            ok = value >= 2
        else:
            raise ApproximationError(f"approximate={spec!r}: faster-cache takes no parameter")
    except ValueError as e:
        if isinstance(e, ApproximationError):
            raise
        ok, value = False, None
    if not ok:
        need = "a number >= 0" if kind == "first-block-cache" else "an integer >= 2 (recompute every N-th step)"
        raise ApproximationError(f"approximate={spec!r}: {kind}'s parameter must be {need}")
    return kind, value


def cache_config(pipe, spec: str):
    """The diffusers cache config ``spec`` names, for ``pipe.transformer.enable_cache``."""
    from diffusers import FasterCacheConfig, FirstBlockCacheConfig, PyramidAttentionBroadcastConfig

    kind, param = parse_approximation(spec)
    if kind == "first-block-cache":
        return FirstBlockCacheConfig(threshold=0.05 if param is None else float(param))
    if kind == "pab":
        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2 if param is None else int(param),
            spatial_attention_timestep_skip_range=(100, 800),
            current_timestep_callback=lambda: pipe.current_timestep)
    # diffusers' FasterCache example for CogVideoX (hooks/faster_cache.py, apply_faster_cache's docstring)
    return FasterCacheConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 681),
        low_frequency_weight_update_timestep_range=(99, 641), high_frequency_weight_update_timestep_range=(-1, 301),
        spatial_attention_block_identifiers=["transformer_blocks"], attention_weight_callback=lambda _: 0.3,
        current_timestep_callback=lambda: pipe.current_timestep, tensor_format="BFCHW")


@contextlib.contextmanager
def approximation(pipe, spec: str | None) -> Iterator[None]:
    """Enable the lever ``spec`` names on ``pipe.transformer`` for the block, and remove it after (the same
    pipeline then generates exactly again). ``None``: nothing changes."""
    if spec is None:
        yield
        return
    transformer = pipe.transformer
    transformer.enable_cache(cache_config(pipe, spec))
    try:
        yield
    finally:
        transformer.disable_cache()
