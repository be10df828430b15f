"""The model families (workbench.model.families) agree with the stock diffusers pipelines: detection from the
configs, the clip rules and their messages, the rotary grid, and CogVideoX1.5's latent frame padding."""

from __future__ import annotations

import re

import pytest
import torch

from workbench.model.families import FamilyError, family_class, family_of_configs, family_of_hub_id
from workbench.model.tiny import build_tiny_pipeline

FAMILIES = ["cogvideox-2b", "cogvideox-5b", "cogvideox1.5-5b"]


@pytest.fixture(scope="module")
def pipes():
    return {name: build_tiny_pipeline(0, name) for name in FAMILIES}


@pytest.mark.parametrize("name", FAMILIES)
def test_family_is_read_from_the_configs(pipes, name):
    pipe = pipes[name]
    family = family_of_configs(pipe.transformer.config, pipe.vae.config)
    assert family.name == name
    assert family.scaling_factor == pipe.vae.config.scaling_factor
    assert family_of_configs(pipe.transformer.config, name=name).name == name  # named and right: fine


def test_a_named_family_the_model_is_not_is_an_error(pipes):
    with pytest.raises(FamilyError, match="is a CogVideoX-5B model, not CogVideoX-2B: set model.family: cogvideox-5b"):
        family_of_configs(pipes["cogvideox-5b"].transformer.config, name="cogvideox-2b", where="m")
    with pytest.raises(FamilyError, match="family='cogvideox-3b': choose one of"):
        family_class("cogvideox-3b")


def test_released_hub_ids_name_their_family_offline():
    assert family_of_hub_id("THUDM/CogVideoX-2b").name == "cogvideox-2b"
    assert family_of_hub_id("zai-org/CogVideoX1.5-5B").name == "cogvideox1.5-5b"
    assert family_of_hub_id("someone/CogVideoX-5b") is None  # a fine-tune: read its configs instead


@pytest.mark.parametrize("name, clip, message", [
    ("cogvideox-2b", (50, 480, 720), "num_frames=50: CogVideoX-2B needs 4k+1 frames (its VAE compresses time 4x); use 49 or 53"),
    ("cogvideox-5b", (49, 480, 770), "width=770: CogVideoX-5B needs sides that are multiples of 16; use 768 or 784"),
    ("cogvideox1.5-5b", (81, 770, 1360), "height=770: CogVideoX1.5-5B needs sides that are multiples of 16"),
])
def test_clip_rules_name_the_fix(name, clip, message):
    family = family_class(name)({"max_text_seq_length": 226})
    with pytest.raises(FamilyError, match=re.escape(message)):
        family.check_clip(*clip)


def test_every_family_takes_its_native_clip_and_15_takes_2b_sized_clips():
    for name in FAMILIES:
        family = family_class(name)({"max_text_seq_length": 226})
        family.check_clip(family.native.num_frames, family.native.height, family.native.width)
    family_class("cogvideox1.5-5b")({}).check_clip(49, 480, 720)  # 13 latent frames, padded to 14


def test_15_refuses_a_clip_beyond_its_rotary_grid(pipes):
    family = family_of_configs(pipes["cogvideox1.5-5b"].transformer.config)
    family.check_clip(9, 128, 128)  # the tiny 1.5 model's bound: sample_height/width 16 x 8
    with pytest.raises(FamilyError, match="larger than this CogVideoX1.5-5B model's rotary grid"):
        family.check_clip(9, 144, 128)


@pytest.mark.parametrize("name", ["cogvideox-5b", "cogvideox1.5-5b"])
@pytest.mark.parametrize("height, width, frames", [(64, 64, 3), (64, 64, 4), (48, 80, 2), (128, 96, 3)])
def test_rotary_grid_is_the_pipelines(pipes, name, height, width, frames):
    pipe = pipes[name]
    family = family_of_configs(pipe.transformer.config, pipe.vae.config)
    frames = frames + family.padding_frames(frames) if hasattr(family, "padding_frames") else frames
    if name == "cogvideox-5b" and height > 64:
        return  # 5B resizes and crops into its base grid: covered by the sizes inside it
    ours = family.rotary_embeddings(frames, height // 8, width // 8, "cpu")
    theirs = pipe._prepare_rotary_positional_embeddings(height, width, frames, torch.device("cpu"))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_2b_has_no_rotary_grid(pipes):
    assert family_of_configs(pipes["cogvideox-2b"].transformer.config).rotary_embeddings(3, 8, 8, "cpu") is None


def test_15_pads_what_the_pipeline_drops(pipes):
    """The stock pipeline samples one extra latent frame for an odd count and drops it from the front; training
    prepends one (a copy of the first frame), so the frame the pipeline drops is the one training added."""
    pipe = pipes["cogvideox1.5-5b"]
    family = family_of_configs(pipe.transformer.config, pipe.vae.config)
    latents = torch.randn(2, 3, 4, 8, 8)
    padded = family.pad_latent_frames(latents)
    assert padded.shape == (2, 4, 4, 8, 8)
    torch.testing.assert_close(padded[:, 0], latents[:, 0])  # prepended: a copy of the first frame
    torch.testing.assert_close(padded[:, 1:], latents)
    assert family.pad_latent_frames(padded) is padded  # an even count is left alone
    seen = []
    pipe.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["hidden_states"].shape[1]),
                                               with_kwargs=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red circle", num_frames=9, height=64, width=64, num_inference_steps=1, guidance_scale=1.0,
               output_type="np", max_sequence_length=32, generator=torch.Generator().manual_seed(0)).frames
    # sampled 3 + 1 latent frames, decoded 3 (9 frames): it dropped family.padding_frames(3) from the front
    assert seen == [4] and out.shape[1] == 9
    assert family.padding_frames(3) == 1


def test_odd_latent_frames_reach_the_objective_padded_or_not_at_all(pipes):
    from diffusers import CogVideoXDPMScheduler

    from workbench.model.objective import diffusion_loss

    pipe = pipes["cogvideox1.5-5b"]
    family = family_of_configs(pipe.transformer.config, pipe.vae.config)
    scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config)
    latents, text = torch.randn(1, 3, 4, 8, 8), torch.randn(1, 32, 32)
    with pytest.raises(ValueError, match="3 latent frames: CogVideoX1.5-5B needs 1 more in front"):
        diffusion_loss(pipe.transformer, scheduler, latents, text, family=family)
    loss = diffusion_loss(pipe.transformer, scheduler, family.pad_latent_frames(latents), text, family=family,
                          generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
