"""Approximate inference levers (workbench.model.caching): parsing, the suite field, and what each does to
generation, on the shipped miniature (diffusers' own hooks on the real CogVideoX classes)."""

from __future__ import annotations

import pytest
import torch

from workbench.eval.generation import generate_suite_videos
from workbench.eval.suite import Suite, SuiteError, load_suite
from workbench.model.caching import ApproximationError, parse_approximation

PROMPTS = ("a red circle moving from left to right on a dark background",
           "a blue square moving from top to bottom on a dark background")


@pytest.mark.parametrize("spec, parsed", [
    ("first-block-cache", ("first-block-cache", None)), ("first-block-cache:0.1", ("first-block-cache", 0.1)),
    ("pab", ("pab", None)), ("pab:3", ("pab", 3)), ("faster-cache", ("faster-cache", None))])
def test_specs_parse(spec, parsed):
    assert parse_approximation(spec) == parsed


@pytest.mark.parametrize("spec", ["", "teacache", "pab:1", "pab:x", "first-block-cache:-1", "faster-cache:2"])
def test_bad_specs_say_what_is_valid(spec):
    with pytest.raises(ApproximationError, match="approximate="):
        parse_approximation(spec)


def test_a_suite_with_a_bad_lever_names_its_file(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nprompts: [a, b]\nnum_frames: 17\napproximate: first-block-cashe\n")
    with pytest.raises(SuiteError, match=r"s.yaml: approximate='first-block-cashe': unknown lever .*first-block-cache"):
        load_suite(suite)


@pytest.fixture(scope="module")
def miniature():
    from workbench.model.pipeline import load_pipeline
    from workbench.model.families import family_of_model
    from workbench.shapes.miniature import MINIATURE_DIR

    pipe = load_pipeline(str(MINIATURE_DIR), device="cpu", dtype="fp32", family=family_of_model(str(MINIATURE_DIR)))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, approximate: str | None, steps: int = 12) -> tuple[torch.Tensor, int]:
    """The suite's videos and how many times the feed-forward of the transformer's last block ran (a skipped
    block is replaced by a hook on the block itself, so only its insides show it)."""
    suite = Suite(name="levers", prompts=PROMPTS, num_frames=17, height=64, width=64, num_inference_steps=steps,
                  batch_size=2, approximate=approximate)
    calls = []
    hook = pipe.transformer.transformer_blocks[-1].ff.register_forward_hook(lambda *_: calls.append(1))
    try:
        frames = torch.cat([b.frames for b in generate_suite_videos(pipe, suite, progress=False)])
    finally:
        hook.remove()
    return frames, len(calls)


def test_levers_skip_work_change_the_videos_and_are_removed_after(miniature):
    stock, stock_calls = generate(miniature, None)
    assert stock_calls == 12  # one batched (CFG) transformer call per step

    same, calls = generate(miniature, "first-block-cache:0")  # a threshold of 0 never skips: exact
    assert calls == 12 and torch.equal(same, stock)

    for spec in ("first-block-cache:0.5", "pab:3", "faster-cache"):
        frames, calls = generate(miniature, spec)
        assert frames.shape == stock.shape and torch.isfinite(frames).all(), spec
        assert not torch.equal(frames, stock), f"{spec} changed nothing"
        if spec.startswith("first-block-cache"):
            assert calls < stock_calls, "first-block-cache ran every block at every step"
        assert not miniature.transformer.is_cache_enabled, f"{spec} left its hooks on the transformer"

    again, _ = generate(miniature, None)  # the pipeline is exact again after the levers
    assert torch.equal(again, stock)
