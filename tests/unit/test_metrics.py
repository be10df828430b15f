"""Unit tests for workbench.metrics (Frechet math, FVD, CLIP score) on tiny stand-ins."""

from __future__ import annotations

import warnings

import re

import numpy as np
import pytest
import torch

from workbench.metrics import (
    FrechetVideoDistance,
    ReferenceStatistics,
    VideoCLIPScore,
    clip_frame_scores,
    clip_score_video,
    clip_scores,
    feature_statistics,
    frechet_distance,
    fvd_features,
    load_clip,
    load_i3d_detector,
    reference_statistics,
    sqrtm_psd,
    video_to_i3d_input,
)
from workbench.metrics.fvd import DETECTOR_KWARGS, STYLEGAN_V_DETECTOR_URL
from workbench.metrics.standins import build_tiny_clip, build_tiny_i3d

pytestmark = pytest.mark.filterwarnings("ignore:FVD .* rank-deficient:UserWarning")


@pytest.fixture(scope="session")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("standins")
    return {
        "i3d": build_tiny_i3d(root / "i3d_torchscript.pt"),
        "i3d_other": build_tiny_i3d(root / "other_i3d.pt", seed=1),
        "clip": build_tiny_clip(root / "tiny_clip"),
    }


@pytest.fixture(scope="session")
def clip(standins):
    return load_clip(standins["clip"])


def _random_spd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or d))
    return a @ a.T + (0 if rank else 0.1 * np.eye(d))


def _videos(seed: int, n: int, frames: int = 16, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, frames, 3, size, size, generator=g)


# --- Frechet distance and matrix square root -------------------------------------------------


def test_frechet_diagonal_matches_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    s1, s2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_non_diagonal_commuting_closed_form():
    # Covariances sharing an eigenbasis Q: the distance reduces to the eigenvalue formula.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    a, b = rng.uniform(0.1, 2, 6), rng.uniform(0.1, 2, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_general_matches_scipy_reference():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    s1, s2 = _random_spd(rng, 8), _random_spd(rng, 8)
    # StyleGAN-V / pytorch-fid formula: sqrtm of the non-symmetric product.
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(torch.tensor(mu1), torch.tensor(s1), mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_identical_rank_deficient_is_zero():
    rng = np.random.default_rng(3)
    sigma = _random_spd(rng, 20, rank=4)
    mu = rng.standard_normal(20)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * np.trace(sigma)


def test_sqrtm_psd():
    rng = np.random.default_rng(4)
    for a in (_random_spd(rng, 7), _random_spd(rng, 7, rank=3)):
        r = sqrtm_psd(a)
        np.testing.assert_allclose(r, r.T, atol=1e-12)
        assert np.linalg.eigvalsh(r).min() > -1e-10
        np.testing.assert_allclose(r @ r, a, atol=1e-9)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    a = _random_spd(rng, 7)
    np.testing.assert_allclose(sqrtm_psd(a), scipy_linalg.sqrtm(a).real, atol=1e-9)
    with pytest.raises(ValueError, match="square"):
        sqrtm_psd(np.ones((2, 3)))


def test_feature_statistics_float64_biased_covariance():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    mu, sigma = feature_statistics(x)
    assert mu.dtype == sigma.dtype == np.float64
    x64 = x.double().numpy()
    np.testing.assert_allclose(mu, x64.mean(0), atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x64, rowvar=False, ddof=0), atol=1e-12)


# --- FVD -------------------------------------------------------------------------------------


def test_video_to_i3d_input_layout_and_range():
    v = _videos(0, 2, frames=20)
    x = video_to_i3d_input(v)
    assert x.shape == (2, 3, 16, 16, 16) and x.dtype == torch.uint8
    expected = (v[:, :16] * 255).round().to(torch.uint8).permute(0, 2, 1, 3, 4)
    assert (x.int() - expected.int()).abs().max() <= 1
    assert torch.equal(video_to_i3d_input(v[:, :16].mul(255).round().to(torch.uint8)), expected)
    gray = video_to_i3d_input(v[:, :, :1])
    assert gray.shape[1] == 3 and torch.equal(gray[:, 0], gray[:, 2])


def test_video_to_i3d_input_rejects_bad_videos():
    with pytest.raises(ValueError, match="16 frames"):
        video_to_i3d_input(_videos(0, 2, frames=8))
    with pytest.raises(ValueError, match=r"\(B, F, C, H, W\)"):
        video_to_i3d_input(_videos(0, 2).permute(0, 2, 1, 3, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        video_to_i3d_input(_videos(0, 2) * 2 - 1.0 - 0.6)


def test_detector_contract_and_features(standins):
    detector = load_i3d_detector(standins["i3d"])
    v = _videos(1, 3)
    feats = fvd_features(detector, v, batch_size=2)
    assert feats.shape == (3, 400) and feats.dtype == torch.float32
    with torch.no_grad():
        direct = detector(video_to_i3d_input(v), rescale=True, resize=True, return_features=True)
    torch.testing.assert_close(feats, direct)
    assert DETECTOR_KWARGS == {"rescale": True, "resize": True, "return_features": True}


def test_fvd_of_set_against_itself_is_zero(standins):
    real, fake = _videos(2, 4), _videos(3, 4) * 0.5
    metric = FrechetVideoDistance(standins["i3d"], batch_size=4)
    metric.update(real, real=True)
    metric.update(real, real=False)
    same = metric.compute()
    assert same.dtype == torch.float64 and abs(float(same)) < 1e-6
    metric.reset()
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert float(metric.compute()) > 1e-3
    assert not any("detector" in k for k in metric.state_dict())


def test_fvd_warns_and_refuses_small_sets(standins):
    metric = FrechetVideoDistance(standins["i3d"])
    metric.update(_videos(4, 3), real=True)
    metric.update(_videos(5, 1), real=False)
    with pytest.raises(ValueError, match="at least 2 generated videos"):
        metric.compute()
    metric.update(_videos(6, 2), real=False)
    import workbench.metrics.fvd as fvd_module

    fvd_module._WARNED.clear()  # warned once a process: another test of this worker may have seen this size
    with pytest.warns(UserWarning, match="rank-deficient.*not comparable"):
        metric.compute()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric.compute()  # the same sets again: said once already


def test_missing_detector_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope" / "i3d_torchscript.pt"
    with pytest.raises(FileNotFoundError, match="i3d_torchscript.pt") as err:
        FrechetVideoDistance(missing)
    assert str(missing) in str(err.value) and STYLEGAN_V_DETECTOR_URL in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope"):
        reference_statistics(missing, _videos(0, 2), tmp_path / "ref.safetensors")


def test_truncated_reference_statistics_are_recomputed_or_named(standins, tmp_path):
    """The cached statistics are derived data: a truncated file is recomputed from the clips, with a warning;
    without clips to recompute from, the error names the file and the fix."""
    real = _videos(7, 4)
    cache = tmp_path / "ref.safetensors"
    stats = reference_statistics(standins["i3d"], real, cache)
    cache.write_bytes(cache.read_bytes()[:100])
    with pytest.raises(ValueError, match="ref.safetensors: the cached FVD reference statistics are unreadable .*"
                                         "delete the file"):
        reference_statistics(standins["i3d"], None, cache)
    with pytest.warns(UserWarning, match="unreadable .*recomputing them"):
        again = reference_statistics(standins["i3d"], real, cache)
    np.testing.assert_allclose(again.mu, stats.mu, rtol=1e-6)
    assert ReferenceStatistics.load(cache).num_samples == 4  # rewritten whole


def test_reference_statistics_cache_round_trip_and_detector_mismatch(standins, tmp_path):
    real, fake = _videos(7, 4), _videos(8, 3)
    cache = tmp_path / "ref" / "real_stats.safetensors"
    stats = reference_statistics(standins["i3d"], [real[:2], real[2:]], cache, batch_size=2)
    assert cache.is_file() and stats.num_samples == 4
    again = reference_statistics(standins["i3d"], None, cache)
    np.testing.assert_array_equal(again.mu, stats.mu)
    np.testing.assert_array_equal(again.sigma, stats.sigma)
    assert again.sigma.dtype == np.float64 and again.detector_sha256 == stats.detector_sha256

    with_ref = FrechetVideoDistance(standins["i3d"], reference=ReferenceStatistics.load(cache))
    with_ref.update(fake, real=False)
    plain = FrechetVideoDistance(standins["i3d"])
    plain.update(real, real=True)
    plain.update(fake, real=False)
    # Batch composition changes float32 conv round-off, hence the tolerance.
    assert float(with_ref.compute()) == pytest.approx(float(plain.compute()), rel=1e-5)
    with pytest.raises(ValueError, match="reference statistics"):
        with_ref.update(real, real=True)

    with pytest.raises(ValueError, match="sha256"):
        reference_statistics(standins["i3d_other"], real, cache)
    with pytest.raises(ValueError, match="sha256"):
        FrechetVideoDistance(standins["i3d_other"], reference=stats)


# --- CLIP score ------------------------------------------------------------------------------


def test_clip_score_matches_hand_computation(standins, clip):
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(standins["clip"]).eval()
    processor = CLIPProcessor.from_pretrained(standins["clip"])
    video = torch.rand(4, 3, 40, 48, generator=torch.Generator().manual_seed(9))
    prompt = "a red car driving on a road at night"
    frames = (video * 255).round().to(torch.uint8)
    with torch.no_grad():
        pixels = processor(images=list(frames), return_tensors="pt")["pixel_values"]
        img = model.get_image_features(pixel_values=pixels)
        text = processor(text=[prompt], return_tensors="pt", padding=True)
        txt = model.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
    img = img if isinstance(img, torch.Tensor) else img.pooler_output
    txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
    cos = (img / img.norm(dim=-1, keepdim=True)) @ (txt / txt.norm(dim=-1, keepdim=True)).T
    per_frame = 100 * cos.squeeze(1).clamp(min=0)

    torch.testing.assert_close(clip_frame_scores(clip, video, prompt), per_frame, atol=1e-3, rtol=1e-4)
    assert clip_score_video(clip, video, prompt) == pytest.approx(float(per_frame.mean()), abs=1e-3)
    assert clip_score_video(clip, frames, prompt) == pytest.approx(clip_score_video(clip, video, prompt), abs=1e-3)


def test_clip_score_agrees_with_torchmetrics_on_one_frame(clip):
    frame = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    clip.reset()
    clip.update((frame * 255).round().to(torch.uint8), ["a dog running on the beach"])
    expected = max(float(clip.compute()), 0.0)
    assert clip_score_video(clip, frame, "a dog running on the beach") == pytest.approx(expected, abs=1e-4)


def test_video_clip_score_metric_per_video(standins, clip):
    videos = torch.rand(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    prompts = ["a cat", "boats on the sea at sunset"]
    metric = VideoCLIPScore(standins["clip"])
    metric.update(videos, prompts)
    expected = torch.tensor([clip_score_video(clip, v, p) for v, p in zip(videos, prompts)])
    torch.testing.assert_close(metric.per_video(), expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(clip_scores(clip, videos, prompts), expected, atol=1e-4, rtol=1e-5)
    assert float(metric.compute()) == pytest.approx(float(expected.mean()), abs=1e-4)
    assert metric.state_dict() == {}
    with pytest.raises(ValueError, match="one prompt per video"):
        metric.update(videos, prompts[:1])


def test_long_prompt_is_truncated(clip):
    video = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(12))
    score = clip_score_video(clip, video, " ".join(["a slow camera view of a forest river"] * 40))
    assert 0.0 <= score <= 100.0


def test_missing_clip_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip(tmp_path / "no_clip_here")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="could not load CLIP model"):
        load_clip(empty)


# --- strict [0, 1] input range ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "shift", "found", "fix"),
    [
        (2.0, -1.0, r"span \[-1, 1\]", r"\(x \+ 1\) / 2"),  # a [-1, 1] video
        (255.0, 0.0, r"span \[0, 255\]", r"x / 255"),  # a [0, 255] float video
        (1.2, 0.0, r"span \[0, 1.2\]", r"rescale to \[0, 1\]"),
    ],
)
def test_float_videos_outside_unit_range_are_refused(clip, scale, shift, found, fix):
    v = _videos(20, 2, frames=16)
    v[0, 0, 0, 0, :2] = torch.tensor([0.0, 1.0])  # exactly [0, 1], then mapped to the test range
    v = v * scale + shift
    for convert in (lambda x: video_to_i3d_input(x), lambda x: clip_score_video(clip, x[0, :2], "a cat")):
        with pytest.raises(ValueError, match=found) as err:
            convert(v)
        assert re.search(fix, str(err.value)) and "[0, 1]" in str(err.value)


def test_float_round_off_just_outside_unit_range_is_accepted_and_clamped(clip):
    v = _videos(21, 1, frames=16)
    v[0, 0, 0, 0, 0], v[0, 0, 0, 0, 1] = 1.0 + 5e-4, -5e-4  # round-off within 1e-3
    x = video_to_i3d_input(v)
    assert int(x[0, 0, 0, 0, 0]) == 255 and int(x[0, 0, 0, 0, 1]) == 0
    assert 0.0 <= clip_score_video(clip, v[0, :2], "a cat") <= 100.0
    for bad in (1.0 + 2e-3, -2e-3, float("nan")):
        v[0, 0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match=r"\[0, 1\]|NaN"):
            video_to_i3d_input(v)
        with pytest.raises(ValueError, match=r"\[0, 1\]|NaN"):
            clip_score_video(clip, v[0, :2], "a cat")


# --- CLIP prompts longer than the context ----------------------------------------------------


def test_long_prompt_keeps_end_of_text_token_unlike_torchmetrics(clip):
    """A prompt longer than the context is cut to BOS + first tokens + EOT (OpenAI CLIP's truncation).
    The text feature is read at the EOT position, so the kept tokens decide it; torchmetrics slices
    the ids, drops EOT, and then pools the start token: every long prompt gets the same feature."""
    from workbench.metrics.clip_score import image_text_embeddings

    ctx = clip.model.config.text_config.max_position_embeddings  # 32 for the stand-in (77 for OpenAI CLIP)
    eot = clip.processor.tokenizer.eos_token_id
    long_a = " ".join(["a slow camera view of a forest river"] * 10)
    long_b = " ".join(["a red car driving on a road at night"] * 10)
    video = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(30))
    frames = (video * 255).round().to(torch.uint8)

    ids = clip.processor(text=[long_a], return_tensors="pt")["input_ids"]
    assert ids.shape[1] > ctx
    kept = torch.cat([ids[:, : ctx - 1], torch.tensor([[eot]])], dim=1)  # BOS + ctx-2 tokens + EOT
    with torch.no_grad():
        expected = clip.model.get_text_features(kept, torch.ones_like(kept))
    _, text_emb = image_text_embeddings(clip, frames, long_a)
    torch.testing.assert_close(text_emb, expected)
    # Words past the context do not count: the same start with another tail scores the same.
    tail = long_a + " with a dog and a cat"
    assert clip_score_video(clip, video, tail) == pytest.approx(clip_score_video(clip, video, long_a), abs=1e-6)
    # Different long prompts still get different text features here ...
    _, text_emb_b = image_text_embeddings(clip, frames, long_b)
    assert not torch.allclose(text_emb, text_emb_b)
    # ... but not with torchmetrics' slicing, which pools the prompt-independent start token.
    with torch.no_grad():
        sliced = [clip.processor(text=[p], return_tensors="pt")["input_ids"][:, :ctx] for p in (long_a, long_b)]
        feats = [clip.model.get_text_features(s, torch.ones_like(s)) for s in sliced]
    assert not (sliced[0] == eot).any()
    torch.testing.assert_close(feats[0], feats[1])
    with pytest.warns(UserWarning, match="longer than"):
        scores = []
        for p in (long_a, long_b):
            clip.reset()
            clip.update(frames[:1], [p])
            scores.append(float(clip.compute()))
    assert scores[0] == pytest.approx(scores[1], abs=1e-5)


# --- feature spaces: detector dimension, VideoMAE-v2 (cd-fvd) -------------------------------


def test_fvd_takes_a_detector_of_another_feature_dimension(tmp_path):
    det32 = build_tiny_i3d(tmp_path / "i3d32.pt", feature_dim=32)
    real, fake = _videos(40, 40), _videos(41, 40) * 0.7
    metric = FrechetVideoDistance(det32, batch_size=16)
    assert metric.feature_dim == 32
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert metric.features().shape == (40, 32) and metric.features(real=True).shape == (40, 32)
    expected = frechet_distance(*feature_statistics(metric.features(True)), *feature_statistics(metric.features()))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-12)
    from workbench.metrics import bootstrap_fvd

    ci = bootstrap_fvd(metric.features(), metric.features(real=True), num_resamples=20)
    assert ci.value == float(metric.compute()) and ci.n == 40 and ci.n_real == 40
    # A declared dimension the detector does not return is refused at the first batch.
    wrong = FrechetVideoDistance(det32, feature_dim=400)
    with pytest.raises(ValueError, match=r"returned shape \(2, 32\), expected \(2, 400\)"):
        wrong.update(_videos(42, 2), real=False)
    # Statistics of a 400-d detector are refused by a 32-d one (and vice versa).
    stats = reference_statistics(build_tiny_i3d(tmp_path / "i3d400.pt"), real, tmp_path / "ref400.safetensors")
    with pytest.raises(ValueError, match="400-dim features, but the detector in use returns 32"):
        FrechetVideoDistance(det32, reference=stats)


@pytest.fixture(scope="session")
def videomae(tmp_path_factory):
    from workbench.metrics.standins import build_tiny_videomae

    root = tmp_path_factory.mktemp("videomae")
    return {
        "safetensors": build_tiny_videomae(root / "tiny_videomae.safetensors"),
        "pth": build_tiny_videomae(root / "tiny_videomae.pth"),
        "torchscript": build_tiny_videomae(root / "tiny_videomae.pt"),
        "other": build_tiny_videomae(root / "other_videomae.safetensors", seed=1),
    }


def _cdfvd_preprocess(videos_uint8_btHWC: torch.Tensor) -> torch.Tensor:
    """cd-fvd's preprocess_videomae, literally: per video (T, H, W, C) -> (C, T, H, W) / 255 -> bilinear 224."""
    out = []
    for vid in videos_uint8_btHWC:
        v = vid.permute(3, 0, 1, 2).to(torch.float32) / 255
        out.append(torch.nn.functional.interpolate(v, size=(224, 224), mode="bilinear", align_corners=False))
    return torch.stack(out)


def test_videomae_standin_preprocessing_and_forms(videomae):
    from workbench.metrics.videomae import load_videomae_detector

    videos = _videos(50, 2, frames=16, size=20)  # (B, F, C, H, W) in [0, 1]
    x = video_to_i3d_input(videos)  # uint8 (B, 3, 16, H, W), as the FVD metric feeds any detector
    dets = {k: load_videomae_detector(p) for k, p in videomae.items() if k != "other"}
    with torch.no_grad():
        feats = {k: d(x) for k, d in dets.items()}
        reference = dets["safetensors"].vit.forward_features(_cdfvd_preprocess(x.permute(0, 2, 3, 4, 1)))
    assert reference.shape == (2, 48) and dets["safetensors"].feature_dim == 48
    for k, f in feats.items():
        torch.testing.assert_close(f, reference, rtol=1e-5, atol=1e-6, msg=k)  # same maths; resize kernels may
        # take another vectorised path with another thread count
    # the state dict has cd-fvd's checkpoint keys (no pos_embed: a fixed table) and the SSv2 head
    state = dets["safetensors"].vit.state_dict()
    assert "pos_embed" not in state and state["head.weight"].shape == (174, 48)
    assert {"patch_embed.proj.weight", "blocks.1.attn.q_bias", "blocks.1.attn.v_bias", "fc_norm.weight"} <= set(state)
    assert state["patch_embed.proj.weight"].shape == (48, 3, 2, 14, 14)  # ViT-g's tubelet 2, patch 14


def test_videomae_loader_errors(tmp_path):
    from workbench.metrics.videomae import CDFVD_CHECKPOINT_NAME, load_videomae_detector

    with pytest.raises(FileNotFoundError, match=CDFVD_CHECKPOINT_NAME):
        load_videomae_detector(tmp_path / "missing.pth")
    torch.save({"model": {"weight": torch.zeros(2)}}, tmp_path / "not_videomae.pth")
    with pytest.raises(ValueError, match="not a VideoMAE-v2"):
        load_videomae_detector(tmp_path / "not_videomae.pth")


def test_fvd_in_videomae_feature_space(videomae, tmp_path):
    real, fake = _videos(51, 6), _videos(52, 5) * 0.6
    metric = FrechetVideoDistance(videomae["safetensors"], batch_size=4, detector_kind="videomae")
    assert metric.feature_dim == 48
    metric.update(real, real=True)
    metric.update(fake, real=False)
    feats = metric.features()
    assert feats.shape == (5, 48)
    expected = frechet_distance(*feature_statistics(metric.features(True)), *feature_statistics(feats))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-12) and expected > 0
    # The I3D call contract is not VideoMAE's: its TorchScript form takes no keyword arguments,
    # and a state dict is no I3D TorchScript.
    with pytest.raises(RuntimeError, match="argument"):
        FrechetVideoDistance(videomae["torchscript"]).update(fake, real=False)
    with pytest.raises(ValueError, match="not a TorchScript file.*detector_kind=.videomae."):
        FrechetVideoDistance(videomae["safetensors"])

    cache = tmp_path / "cdfvd_ref.safetensors"
    stats = reference_statistics(videomae["safetensors"], real, cache, detector_kind="videomae")
    assert stats.detector_kind == "videomae" and stats.feature_dim == 48
    loaded = ReferenceStatistics.load(cache)
    assert loaded.detector_kind == "videomae" and loaded.feature_dim == 48
    with_ref = FrechetVideoDistance(videomae["safetensors"], reference=loaded, detector_kind="videomae")
    with_ref.update(fake, real=False)
    assert float(with_ref.compute()) == pytest.approx(expected, rel=1e-5)


def test_reference_statistics_refuse_another_feature_space(standins, videomae, tmp_path):
    real = _videos(53, 4)
    i3d_stats = reference_statistics(standins["i3d"], real, tmp_path / "i3d.safetensors")
    vmae_stats = reference_statistics(videomae["safetensors"], real, tmp_path / "vmae.safetensors",
                                      detector_kind="videomae")
    # another kind
    with pytest.raises(ValueError, match="i3d feature space .* detector in use is a videomae"):
        FrechetVideoDistance(videomae["safetensors"], reference=i3d_stats, detector_kind="videomae")
    with pytest.raises(ValueError, match="videomae feature space .* detector in use is a i3d"):
        FrechetVideoDistance(standins["i3d"], reference=vmae_stats)
    with pytest.raises(ValueError, match="videomae feature space"):
        reference_statistics(standins["i3d"], None, tmp_path / "vmae.safetensors")
    # same kind and dimension, another file (hash)
    with pytest.raises(ValueError, match="sha256"):
        FrechetVideoDistance(videomae["other"], reference=vmae_stats, detector_kind="videomae")
    with pytest.raises(ValueError, match="sha256"):
        reference_statistics(videomae["other"], None, tmp_path / "vmae.safetensors", detector_kind="videomae")
    with pytest.raises(ValueError, match="unknown FVD detector kind"):
        FrechetVideoDistance(standins["i3d"], detector_kind="inception")


def test_reference_statistics_files_from_before_feature_spaces_are_i3d(standins, tmp_path):
    from safetensors.numpy import save_file

    from workbench.common import file_sha256

    rng = np.random.default_rng(5)
    path = tmp_path / "old.safetensors"
    save_file({"mu": rng.standard_normal(400), "sigma": np.eye(400)}, str(path),
              metadata={"num_samples": "10", "detector_sha256": file_sha256(standins["i3d"]), "num_frames": "16",
                        "protocol": "stylegan-v-fvd"})
    old = ReferenceStatistics.load(path)
    assert old.detector_kind == "i3d" and old.feature_dim == 400
    FrechetVideoDistance(standins["i3d"], reference=old)  # accepted


# --- image-to-video: first-frame fidelity and CLIP image similarity ----------------------------------------

def test_first_frame_psnr_and_ssim_against_their_definitions():
    from workbench.metrics.image_fidelity import MAX_PSNR_DB, first_frame_psnr_ssim

    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 32, 32, generator=g)
    videos = torch.rand(3, 5, 3, 32, 32, generator=g)
    videos[0, 0] = images[0]                                       # the image itself: capped PSNR, SSIM 1
    videos[1, 0] = (images[1] + 0.05 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1)  # a little noise
    psnr, ssim = first_frame_psnr_ssim(videos, images)
    mse = ((videos[:, 0] - images) ** 2).flatten(1).mean(1)
    assert psnr[0] == MAX_PSNR_DB and ssim[0] == pytest.approx(1.0, abs=1e-5)
    assert psnr[1:].tolist() == pytest.approx((-10 * torch.log10(mse[1:])).tolist(), abs=1e-4)  # data range 1
    assert psnr[1] > 20 > psnr[2] and ssim[1] > 0.5 > ssim[2]   # later frames do not count
    videos[1, 1:] = 0
    assert first_frame_psnr_ssim(videos, images)[0][1] == psnr[1]


def test_image_fidelity_refuses_what_it_cannot_compare():
    from workbench.metrics.image_fidelity import first_frame_psnr_ssim

    videos, images = torch.rand(2, 5, 3, 32, 32), torch.rand(2, 3, 32, 32)
    for bad_videos, bad_images, message in (
            (videos, images[:1], "2 videos but 1 images"),
            (videos, torch.rand(2, 3, 16, 32), "resize the images to the clip"),
            (videos * 255, images, "videos must be float in"),
            (videos[:, 0], images, r"videos must be \(B, F, 3, H, W\)")):
        with pytest.raises(ValueError, match=message):
            first_frame_psnr_ssim(bad_videos, bad_images)


def test_clip_image_similarity_is_100_for_the_image_itself_and_lower_for_others(clip):
    from workbench.metrics.image_fidelity import ImageFidelity, clip_image_similarity

    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 32, 32, generator=g)
    same = images[:, None].expand(-1, 4, -1, -1, -1).clone()
    other = torch.rand(2, 4, 3, 32, 32, generator=g)
    assert clip_image_similarity(clip, same, images).tolist() == pytest.approx([100.0, 100.0], abs=1e-3)
    assert (clip_image_similarity(clip, other, images) < 99.9).all()
    metric = ImageFidelity(clip=clip)
    metric.update(same, images)
    metric.update(other, images)
    per_video = metric.per_video()
    assert set(per_video) == {"first_frame_psnr", "first_frame_ssim", "clip_image"}
    assert all(v.shape == (4,) for v in per_video.values())
    means = metric.compute()
    assert float(means["clip_image"]) == pytest.approx(float(per_video["clip_image"].mean()))
    assert set(ImageFidelity().per_video()) == {"first_frame_psnr", "first_frame_ssim"}  # without CLIP


def test_conditioning_image_is_resized_as_the_i2v_pipeline_does():
    from diffusers.video_processor import VideoProcessor
    from PIL import Image

    from workbench.metrics.image_fidelity import conditioning_image_tensor

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 72, 3), dtype=np.uint8))
    ours = conditioning_image_tensor(image, 32, 48)
    # CogVideoXImageToVideoPipeline: self.video_processor.preprocess(image, height=height, width=width)
    theirs = VideoProcessor(vae_scale_factor=8).preprocess(image, height=32, width=48)[0]
    assert ours.shape == (3, 32, 48) and torch.allclose(ours * 2 - 1, theirs, atol=1e-6)
