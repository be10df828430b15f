"""The shapes world's trainers (VAE, FVD detector, CLIP) at tiny settings on CPU: each writes a loadable
artifact with the interface the project uses, and a report with its keys."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.shapes.world import COLOURS, Scene, SceneSampler, caption, render


def _video(scene: Scene | None = None) -> torch.Tensor:
    scene = scene or Scene("yellow", "triangle", "left to right")
    return torch.from_numpy(render(scene, 17, 64, 64))  # (F, H, W, 3) uint8


# --------------------------------------------------------------------------------------------- VAE


def test_train_vae_writes_a_loadable_diffusers_vae(tmp_path):
    from diffusers import AutoencoderKLCogVideoX

    from workbench.shapes.vae import LATENT_SHAPE, train_vae

    out = tmp_path / "vae"
    # narrower widths than VAE_CONFIG keep the test fast; the block layout (and so the latent shape) is the real one
    report = train_vae(out, steps=2, batch_size=1, num_clips=4, eval_clips=2, scale_clips=2, log_every=1,
                       device="cpu", config={"block_out_channels": (8, 8, 16, 16), "norm_num_groups": 4})
    for key in ("psnr", "heldout", "scaling_factor", "num_params", "steps", "seconds", "size_bytes"):
        assert key in report
    assert set(report["heldout"]["per_colour"]) <= set(COLOURS)
    for entry in report["heldout"]["per_colour"].values():
        assert {"psnr", "reconstructed_rgb", "nearest_palette"} <= set(entry)
    assert json.loads((out / "report.json").read_text())["steps"] == 2

    vae = AutoencoderKLCogVideoX.from_pretrained(out).eval()
    assert vae.config.scaling_factor == pytest.approx(report["scaling_factor"])
    assert vae.config.shift_factor is None
    x = _video().permute(3, 0, 1, 2).unsqueeze(0).float() / 127.5 - 1  # (1, 3, 17, 64, 64)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        assert tuple(z.shape) == (1, *LATENT_SHAPE) == (1, 8, 5, 8, 8)
        assert tuple(vae.decode(z).sample.shape) == (1, 3, 17, 64, 64)


def test_vae_trains_through_the_chunked_encode_and_decode():
    """diffusers encodes 17 frames as 9 + 8 and decodes 5 latent frames as 3 + 2 with conv caches:
    gradients reach every parameter through that path, and the last frame's loss reaches the first
    frame (through the caches from the first chunk into the second)."""
    from workbench.shapes.vae import VAE_CONFIG, build_vae

    torch.manual_seed(0)
    vae = build_vae({**VAE_CONFIG, "block_out_channels": (8, 8, 16, 16), "norm_num_groups": 4})
    x = (_video().permute(3, 0, 1, 2).unsqueeze(0).float() / 127.5 - 1).requires_grad_(True)
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample()).sample
    assert rec.shape == x.shape
    (rec[:, :, 16] - x[:, :, 16]).abs().mean().backward()
    missing = [n for n, p in vae.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert x.grad[:, :, 0].abs().sum() > 0


def test_build_vae_checks_norm_groups():
    from workbench.shapes.vae import VAE_CONFIG, build_vae

    with pytest.raises(ValueError, match="norm_num_groups"):
        build_vae({**VAE_CONFIG, "norm_num_groups": 5})


# ---------------------------------------------------------------------------------------- detector


def test_train_detector_writes_a_stylegan_v_style_torchscript(tmp_path):
    from workbench.metrics.fvd import DETECTOR_KWARGS, I3D_FEATURE_DIM, fvd_features, load_i3d_detector
    from workbench.shapes.detector import train_detector

    out = tmp_path / "detector.pt"
    report = train_detector(out, steps=2, batch_size=4, lr=1e-3, seed=0, device="cpu", num_clips=16,
                            eval_clips=8, mp4_clips=0, log_every=1)
    for key in ("accuracy", "heldout", "num_params", "size_bytes", "steps", "seconds"):
        assert key in report
    assert set(report["accuracy"]) == {"colour", "shape", "direction", "all"}
    assert {"clean", "augmented", "fvd"} <= set(report["heldout"])
    assert json.loads(out.with_suffix(".json").read_text())["steps"] == 2
    assert out.stat().st_size < 1.5e6

    det = torch.jit.load(str(out)).eval()
    x = torch.stack([_video(), _video(Scene("red", "circle", "top to bottom"))])[:, :16]
    x = x.permute(0, 4, 1, 2, 3).contiguous()  # (2, 3, 16, 64, 64) uint8
    with torch.no_grad():
        feats = det(x, rescale=True, resize=True, return_features=True)
        assert feats.shape == (2, I3D_FEATURE_DIM) == (2, 400) and feats.dtype == torch.float32
        assert torch.allclose(det(x.float(), rescale=True, resize=True, return_features=True), feats)
        probs = det(x, rescale=True, resize=True)
        assert probs.shape == (2, 11)
        assert torch.allclose(probs.sum(1), torch.full((2,), 3.0), atol=1e-5)  # three softmaxes
        # other clip lengths and sizes (resize) work too
        assert det(x[:, :, :8], rescale=True, resize=True, return_features=True).shape == (2, 400)
        big = torch.nn.functional.interpolate(x.float().flatten(1, 2), size=(96, 128)).view(2, 3, 16, 96, 128)
        assert det(big, **DETECTOR_KWARGS).shape == (2, 400)
    # and the project's FVD code takes it as its detector
    videos = torch.stack([_video(), _video()]).permute(0, 1, 4, 2, 3)  # (B, F, C, H, W) uint8
    assert fvd_features(load_i3d_detector(out), videos).shape == (2, 400)


def test_train_detector_is_deterministic(tmp_path):
    from workbench.shapes.detector import train_detector

    kw = dict(steps=2, batch_size=2, lr=1e-3, seed=3, device="cpu", num_clips=8, eval_clips=4, mp4_clips=0)
    a = train_detector(tmp_path / "a.pt", **kw)
    b = train_detector(tmp_path / "b.pt", **kw)
    assert a["history"][-1]["loss"] == b["history"][-1]["loss"]
    sa, sb = torch.jit.load(str(tmp_path / "a.pt")).state_dict(), torch.jit.load(str(tmp_path / "b.pt")).state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_augment_keeps_colours_apart():
    """The detector's and CLIP's augmentation never moves a palette colour nearer another one."""
    from workbench.shapes.augment import augment

    names = list(COLOURS)
    palette = torch.tensor([COLOURS[n] for n in names], dtype=torch.float32)
    clips = torch.stack([torch.from_numpy(render(Scene(c, "square", "left to right", size=0.3), 4, 32, 32))
                         for c in names])  # (4, F, H, W, 3)
    video = clips.permute(0, 4, 1, 2, 3).float().repeat(16, 1, 1, 1, 1)  # 64 clips
    out = augment(video, torch.Generator().manual_seed(0))
    centre = out[:, :, :, 16, 16]  # inside the square, (64, 3, F)
    nearest = (centre.permute(0, 2, 1).unsqueeze(-2) - palette).norm(dim=-1).argmin(-1)  # (64, F)
    assert (nearest == torch.arange(4).repeat(16).view(-1, 1)).all()
    again = augment(video, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


# -------------------------------------------------------------------------------------------- CLIP


def test_clip_tokenizer_spells_every_caption_word_as_one_token():
    from workbench.shapes.clip import build_tokenizer, caption_words

    tok = build_tokenizer()
    words = caption_words()
    assert {"yellow", "triangle", "bottom", "background", "to", "top"} <= set(words)
    for w in words:
        assert len(tok(w, add_special_tokens=False)["input_ids"]) == 1, w
    ids = tok(caption("yellow", "triangle", "bottom to top"))["input_ids"]
    assert len(ids) == 2 + len(caption("yellow", "triangle", "bottom to top").split())
    assert build_tokenizer().get_vocab() == tok.get_vocab()


def test_train_clip_writes_a_model_the_clip_score_loads(tmp_path):
    from transformers import CLIPProcessor

    from workbench.metrics.clip_score import VideoCLIPScore, clip_score_video, load_clip
    from workbench.shapes.clip import build_tokenizer, check_preprocessing, train_clip

    out = tmp_path / "clip"
    report = train_clip(out, steps=2, batch_size=8, lr=1e-3, seed=0, device="cpu", num_clips=16, eval_clips=8,
                        score_videos=2, mp4_videos=0, log_every=1)
    for key in ("retrieval", "clip_score", "num_params", "size_bytes", "steps", "seconds"):
        assert key in report
    assert {"exact", "colour", "shape", "direction"} <= set(report["retrieval"]["text_to_image"])
    assert {"matched", "other_colour", "matched_wins_vs_colour"} <= set(report["clip_score"])
    assert (out / "report.json").is_file()
    assert report["size_bytes"] < 2.2e6

    processor = CLIPProcessor.from_pretrained(out)
    text = caption("yellow", "triangle", "left to right")
    assert processor.tokenizer(text)["input_ids"] == build_tokenizer()(text)["input_ids"]
    frames = _video().permute(0, 3, 1, 2)  # (F, 3, H, W) uint8
    assert check_preprocessing(processor, frames[:3]) <= 1e-5

    video = frames.float() / 255  # workbench convention: (F, C, H, W) in [0, 1]
    metric = VideoCLIPScore(out)
    metric.update(video.unsqueeze(0), [text])
    score = float(metric.compute())
    assert 0.0 <= score <= 100.0
    assert clip_score_video(load_clip(out), video, text) == pytest.approx(score, abs=1e-4)


def test_pools_cover_every_colour_and_differ_between_train_and_heldout():
    from workbench.shapes.augment import heldout_seed, render_pool, train_seed

    train, held = render_pool(48, train_seed(0)), render_pool(48, heldout_seed(0))
    assert {s.colour for s in train.scenes} == set(COLOURS)
    assert train.frames.shape == (48, 17, 64, 64, 3) and train.frames.dtype == torch.uint8
    assert len(set(train.caption_ids.tolist())) == 48  # every (colour, shape, direction)
    assert {s.size for s in train.scenes}.isdisjoint({s.size for s in held.scenes})
    assert SceneSampler(colours=tuple(COLOURS), seed=train_seed(0)).scenes(3) == train.scenes[:3]
