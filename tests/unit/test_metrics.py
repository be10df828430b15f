"""Unit tests for workbench.metrics (Frechet math, FVD, CLIP score) on tiny stand-ins."""

from __future__ import annotations

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
    with pytest.warns(UserWarning, match="rank-deficient.*not comparable"):
        metric.compute()


def test_missing_detector_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope" / "i3d_torchscript.pt"
    with pytest.raises(FileNotFoundError, match="i3d_torchscript.pt") as err:
        FrechetVideoDistance(missing)
    assert str(missing) in str(err.value) and STYLEGAN_V_DETECTOR_URL in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope"):
        reference_statistics(missing, _videos(0, 2), tmp_path / "ref.safetensors")


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
