"""For every family, what the transformer is fed in the module's real training step equals what the stock
diffusers pipeline feeds it at its first denoising step: the same noisy latent and timestep, posterior means,
image noise off, hooked with a forward pre-hook on both sides.

The training side reads a clip and an image of *another aspect than the clip* through the project's own data
path (manifest, dataset, collate, the module's ``batch_loss``). The sampling side is the stock pipeline given
the image framed by the model card's snippet (code independent of the workbench's), so a training image that is
stretched instead of cropped shows. The video latents' scaling and 1.5's frame padding are held against the
stock pipeline's decoding convention (``latents / vae_scaling_factor_image``, padding frames dropped from the
front). Mutations this must catch (each was run against a copy of the code, see the closing note of the session
that wrote it): the image latent multiplied where the pipeline divides (1.5-I2V) or the reverse; the video
latents divided instead of multiplied; the image latent in another frame; 1.5's padding at the back; the
training image stretched instead of cropped.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import diffusers
import diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video as stock_i2v
from workbench.common import write_video
from workbench.model.families.image_to_video import PREPARE_SNIPPET

FAMILIES = ["cogvideox-2b", "cogvideox-5b", "cogvideox1.5-5b", "cogvideox-5b-i2v", "cogvideox1.5-5b-i2v"]
FRAMES, HEIGHT, WIDTH, FPS = 9, 64, 64, 8.0  # 5B-I2V's tiny learned positions fix 9 frames at 64x64
CAPTION = "a red circle moving from left to right"


def card_prepare_image(image, height, width):
    """The model card's image preparation, run as a stock-diffusers user runs it (exec of the card's text)."""
    scope: dict = {}
    exec(PREPARE_SNIPPET, scope)  # noqa: S102 (our own constant)
    return scope["prepare_image"](image, height, width)


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """A 9-frame clip (smooth moving content) and a wide conditioning image (48 x 112: another aspect)."""
    root = tmp_path_factory.mktemp("footage")
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = np.stack([np.stack([(x * 4 + 20 * t) % 256, (y * 4) % 256, np.full_like(x, 90 + 10 * t)], -1)
                       for t in range(FRAMES)]).astype(np.uint8)
    write_video(root / "clip.mp4", frames, FPS)
    yy, xx = np.mgrid[0:48, 0:112]
    wide = np.stack([xx * 2, yy * 5, (xx + yy) % 256], -1).astype(np.uint8)  # a gradient: crop and stretch differ
    Image.fromarray(wide).save(root / "wide.png")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from workbench.model.tiny import save_tiny_model

    base = tmp_path_factory.mktemp("family-models")
    return {f: save_tiny_model(base / f, family=f) for f in FAMILIES}


class FirstCallSeen(Exception):
    pass


def capture_first_call(transformer, run, stop: bool = False) -> dict:
    """The keyword arguments of the transformer's first forward during ``run`` (``stop``: end ``run`` there)."""
    seen: dict = {}

    def hook(module, args, kwargs):
        if not seen:
            seen.update(kwargs)
            if stop:
                raise FirstCallSeen

    handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run()
    except FirstCallSeen:
        pass
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("name", FAMILIES)
def test_training_step_feeds_the_transformer_what_the_stock_pipeline_does(name, models, footage, tmp_path,
                                                                          monkeypatch):
    from workbench.data.dataset import VideoCaptionDataset, collate
    from workbench.data.manifest import read_manifest
    from workbench.train.module import CogVideoXModule

    i2v = name.endswith("-i2v")
    root = tmp_path / "data"
    root.mkdir()
    for f in ("clip.mp4", "wide.png"):
        shutil.copy(footage / f, root / f)
    row = {"file_name": "clip.mp4", "caption": CAPTION, **({"image": "wide.png"} if i2v else {})}
    (root / "metadata.jsonl").write_text(json.dumps(row) + "\n")
    batch = collate([VideoCaptionDataset(root, read_manifest(root), FRAMES, HEIGHT, WIDTH, FPS)[0]])

    module = CogVideoXModule(model=str(models[name]), mode="lora", lora={"rank": 4, "alpha": 4}, warmup_steps=0)
    module.configure_model()
    family = module.family
    # posterior means (no latent draw), zero noise (the noisy latent is sqrt(alpha_bar) x0), image noise off
    monkeypatch.setattr(module, "sample_moments", lambda moments, gens: moments.float().chunk(2, dim=1)[0])
    monkeypatch.setattr(module, "draw", lambda gens, shape: torch.zeros(len(gens), *shape))
    if i2v:
        monkeypatch.setattr(type(family), "noised_images", staticmethod(lambda images, gens: images.float()))
        monkeypatch.setattr(stock_i2v, "retrieve_latents", lambda out, generator=None, sample_mode="sample":
                            out.latent_dist.mode())

    pipe = getattr(diffusers, family.pipeline_class).from_pretrained(str(models[name]))
    pipe.set_progress_bar_config(disable=True)
    # the pipeline's first step at a timestep where x0 can be read back (the schedulers' trailing spacing starts
    # at 999, which zero terminal SNR makes pure noise)
    timestep = 500
    set_timesteps = pipe.scheduler.set_timesteps

    def fixed_timesteps(num_inference_steps=None, device=None, **kw):
        set_timesteps(num_inference_steps, device, **kw)
        pipe.scheduler.timesteps = torch.tensor([timestep, 250], device=device)

    monkeypatch.setattr(pipe.scheduler, "set_timesteps", fixed_timesteps)

    gens = [torch.Generator().manual_seed(0)]
    with torch.no_grad():
        trained = capture_first_call(module.transformer,
                                     lambda: module.batch_loss(batch, gens, train=False, timestep=timestep))
    channels = pipe.transformer.config.out_channels
    noisy = trained["hidden_states"][:, :, :channels]

    # the video latents, against the stock pipeline's decoding: it divides by vae_scaling_factor_image and drops
    # the padding frames from the front
    alpha_bar = pipe.scheduler.alphas_cumprod[timestep]
    x0 = noisy / alpha_bar.sqrt()
    with torch.no_grad():
        mean = pipe.vae.encode(batch["video"].to(pipe.vae.dtype)).latent_dist.mean
    expected = (mean * pipe.vae_scaling_factor_image).permute(0, 2, 1, 3, 4)
    pad = x0.shape[1] - expected.shape[1]
    assert pad == family.padding_frames(expected.shape[1])
    torch.testing.assert_close(x0[:, pad:], expected, rtol=1e-4, atol=1e-5)
    if pad:  # CogVideoX1.5: the padding frames in front repeat the first latent frame
        torch.testing.assert_close(x0[:, :pad], expected[:, :1].expand(-1, pad, -1, -1, -1), rtol=1e-4, atol=1e-5)

    extra = {}
    if i2v:
        raw = Image.open(footage / "wide.png").convert("RGB")
        prepared = card_prepare_image(raw, HEIGHT, WIDTH)
        # every workbench sampling path gives the pipeline exactly the card's framing
        ours = family.sampling_inputs([raw], HEIGHT, WIDTH, 1)["image"][0]
        assert np.array_equal(np.asarray(ours), np.asarray(prepared))
        # and the raw image, stretched by the pipeline, would be another picture (the test can fail)
        stretched = np.asarray(raw.resize((WIDTH, HEIGHT), Image.LANCZOS), dtype=np.float64)
        assert np.abs(stretched - np.asarray(prepared, dtype=np.float64)).mean() > 10
        extra["image"] = prepared
    with torch.no_grad():
        sampled = capture_first_call(pipe.transformer, lambda: pipe(
            prompt=CAPTION, latents=noisy.clone(), num_frames=FRAMES, height=HEIGHT, width=WIDTH,
            num_inference_steps=2, guidance_scale=1.0, max_sequence_length=family.text_len, output_type="latent",
            generator=torch.Generator().manual_seed(0), **extra), stop=True)

    assert trained["hidden_states"].shape == sampled["hidden_states"].shape
    # the image channels (I2V): the image's latent, scaled as the pipeline scales it, in the frame it puts it in
    torch.testing.assert_close(trained["hidden_states"], sampled["hidden_states"], rtol=1e-4, atol=1e-5)
    assert torch.equal(trained["timestep"].float(), sampled["timestep"].float().expand_as(trained["timestep"]))
    torch.testing.assert_close(trained["encoder_hidden_states"], sampled["encoder_hidden_states"])
    rotary_t, rotary_s = trained.get("image_rotary_emb"), sampled.get("image_rotary_emb")
    assert (rotary_t is None) == (rotary_s is None)
    if rotary_t is not None:
        for a, b in zip(rotary_t, rotary_s):
            torch.testing.assert_close(a, b)
    assert (trained.get("ofs") is None) == (sampled.get("ofs") is None)
    if trained.get("ofs") is not None:
        assert float(trained["ofs"].flatten()[0]) == float(sampled["ofs"].flatten()[0])
    if i2v:  # the image half is not zero: the comparison above checked something
        assert trained["hidden_states"][:, :, channels:].abs().max() > 0.05


@pytest.mark.parametrize("size", [(48, 112), (120, 90), (64, 64), (31, 200)])
def test_the_card_snippet_frames_as_training_does(size):
    from workbench.model.framing import prepare_image

    rng = np.random.default_rng(size[0])
    image = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    for h, w in ((64, 64), (48, 80), (96, 64)):
        assert np.array_equal(np.asarray(card_prepare_image(image, h, w)), np.asarray(prepare_image(image, h, w)))
