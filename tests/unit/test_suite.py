"""Unit tests of evaluation suites: loading, validation, path resolution, results formatting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from workbench.eval.generation import VideoBatch
from workbench.eval.results import fvd_comparability, results_markdown, suite_results
from workbench.eval.scoring import SuiteScores, VideoScore
from workbench.eval.suite import Suite, SuiteError, load_suite

SUITES = REPO / "evals" / "suites"

MINIMAL = """
prompts: [a red circle, a blue square]
num_frames: 17
height: 64
width: 64
fps: 16
num_inference_steps: 2
reference: data
fvd_detector: ../detectors/i3d.pt
"""


def write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / "suites" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bundled_suites_load():
    smoke = load_suite(SUITES / "smoke.yaml")
    assert smoke.name == "smoke" and 2 <= len(smoke.prompts) <= 4
    assert smoke.num_frames >= 16 and (smoke.num_frames - 1) % 4 == 0
    assert (smoke.height, smoke.width) == (64, 64) and smoke.num_inference_steps <= 4
    from workbench.shapes.world import COLOURS, DIRECTIONS, SHAPES

    captions = {f"a {c} {s} moving from {d} on a dark background" for c in COLOURS for s in SHAPES for d in DIRECTIONS}
    assert set(smoke.prompts) <= captions
    domain = load_suite(SUITES / "domain.yaml")
    assert (domain.num_frames, domain.height, domain.width) == (49, 480, 720)
    assert domain.num_inference_steps == 50 and domain.guidance_scale == 6.0
    assert domain.clip_model == "openai/clip-vit-base-patch32"
    assert domain.fvd_detector.name == "i3d_torchscript.pt"


def test_defaults_and_relative_paths(tmp_path):
    (tmp_path / "suites" / "clip").mkdir(parents=True)
    path = write(tmp_path, MINIMAL + "clip_model: ./clip\n")
    suite = load_suite(path)
    assert suite.name == "mine"  # from the file name
    assert suite.seeds == (0,) and suite.scheduler == "dpm" and suite.batch_size == 1
    assert suite.reference == tmp_path / "suites" / "data"
    assert suite.fvd_detector == tmp_path / "detectors" / "i3d.pt"
    assert Path(suite.clip_model) == (tmp_path / "suites" / "clip").absolute()
    assert suite.path == path and suite.num_videos == 2
    json.dumps(suite.settings())  # params and results.json need plain values


def test_hub_clip_model_kept(tmp_path):
    suite = load_suite(write(tmp_path, MINIMAL + "clip_model: openai/clip-vit-large-patch14\n"))
    assert suite.clip_model == "openai/clip-vit-large-patch14"
    assert load_suite(write(tmp_path, MINIMAL, "b.yaml")).clip_model == "openai/clip-vit-base-patch32"


def test_prompts_file_appends(tmp_path):
    (tmp_path / "suites" / "p.txt").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "suites" / "p.txt").write_text("a green dot\n\n  a yellow bar  \n")
    suite = load_suite(write(tmp_path, MINIMAL + "prompts_file: p.txt\n"))
    assert suite.prompts == ("a red circle", "a blue square", "a green dot", "a yellow bar")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"prompts": "[]"}, "no prompts"),
        ({"prompts": "['a', '  ']"}, "prompts[1] is empty"),
        ({"num_frames": "13"}, "16-frame clips"),
        ({"num_frames": "18"}, "4k+1"),
        ({"height": "72"}, "multiples of 16"),
        ({"seeds": "[1, 1]"}, "distinct integers"),
        ({"seeds": "[]"}, "seeds is empty"),
        ({"num_inference_steps": "0"}, "positive integer"),
        ({"fps": "0"}, "fps=0"),
        ({"guidance_scale": "-1"}, "guidance_scale"),
        ({"scheduler": "euler"}, "scheduler='euler'"),
        ({"prompts": "[just one]"}, "at least 2 generated videos"),
        ({"name": "'my suite'"}, "name='my suite'"),
    ],
)
def test_invalid_fields_name_the_file_and_field(tmp_path, change, message):
    lines = [line for line in MINIMAL.strip().splitlines() if line.split(":")[0] not in change]
    path = write(tmp_path, "\n".join(lines + [f"{k}: {v}" for k, v in change.items()]) + "\n")
    with pytest.raises(SuiteError, match="mine.yaml") as err:
        load_suite(path)
    assert message in str(err.value)


def test_missing_prompts_key(tmp_path):
    text = "\n".join(line for line in MINIMAL.splitlines() if not line.startswith("prompts"))
    with pytest.raises(SuiteError, match="no prompts"):
        load_suite(write(tmp_path, text))


def test_unknown_key_and_bad_files(tmp_path):
    with pytest.raises(SuiteError, match="unknown field.*num_frame\\b"):
        load_suite(write(tmp_path, MINIMAL + "num_frame: 17\n"))
    with pytest.raises(SuiteError, match="no such suite file"):
        load_suite(tmp_path / "nope.yaml")
    with pytest.raises(SuiteError, match="YAML mapping"):
        load_suite(write(tmp_path, "- a\n- b\n", "list.yaml"))
    with pytest.raises(SuiteError, match="not valid YAML"):
        load_suite(write(tmp_path, "prompts: [a\n", "broken.yaml"))
    with pytest.raises(SuiteError, match="prompts_file .* does not exist"):
        load_suite(write(tmp_path, MINIMAL + "prompts_file: missing.txt\n", "pf.yaml"))


def test_overrides_are_validated():
    suite = Suite(name="s", prompts=("a", "b"), num_frames=17, height=64, width=64)
    assert suite.with_overrides(clip_model="x", fvd_detector=None).clip_model == "x"
    assert suite.with_overrides(fvd_detector=None).fvd_detector is None
    with pytest.raises(SuiteError, match="4k\\+1"):
        suite.with_overrides(num_frames=20)


def test_jobs_are_prompt_major_with_every_seed():
    suite = Suite(name="s", prompts=["a", "b"], seeds=[3, 7], num_frames=17, height=64, width=64)
    assert suite.jobs() == [(0, "a", 3), (0, "a", 7), (1, "b", 3), (1, "b", 7)]


def test_results_json_and_markdown(tmp_path):
    suite = Suite(name="s", prompts=("a | b", "c"), seeds=(0,), num_frames=17, height=64, width=64)
    videos = [VideoScore("a | b", 20.0, 0, 0, tmp_path / "videos" / "000-seed0.mp4"),
              VideoScore("c", 10.0, 0, 1, tmp_path / "videos" / "001-seed0.mp4")]
    scores = SuiteScores(15.0, 123.0, 2, 8, videos)
    base = SuiteScores(12.0, 150.0, 2, 8, [VideoScore(v.prompt, v.clip_score - 1, v.seed, v.prompt_index,
                                                      tmp_path / "videos_base" / v.path.name) for v in videos])
    results = suite_results(suite, scores, base, out=tmp_path, info={"model": "m"})
    assert results["metrics"]["eval/clip_score"] == 15.0 and results["metrics"]["eval/fvd_base"] == 150.0
    assert results["videos"][0]["path"] == "videos/000-seed0.mp4"
    assert results["videos"][1]["base_clip_score"] == 9.0
    assert results["fvd_comparability"]["comparable"] is False and "relative" in results["fvd_comparability"]["note"]
    json.dumps(results)
    md = results_markdown(results)
    assert "a \\| b" in md and "| `eval/fvd` | 123 | 150 |" in md


def test_fvd_comparability_only_under_the_stylegan_v_protocol_with_2048_videos():
    suite = Suite(name="s", prompts=("a", "b"))
    assert fvd_comparability(suite, 2048, 2048)["comparable"] is False  # the workbench protocol: relative
    sv = suite.with_overrides(protocol="stylegan-v")
    assert fvd_comparability(sv, 2048, 2048)["comparable"] is True
    short = fvd_comparability(sv, 500, 100)
    assert short["comparable"] is False and len(short["missing"]) == 2 and "NOT comparable" in short["note"]


def test_video_batch_checks_counts():
    with pytest.raises(ValueError, match="2 videos but 1 prompts"):
        VideoBatch(torch.zeros(2, 16, 3, 8, 8), ["a"])
    batch = VideoBatch(torch.zeros(1, 16, 3, 8, 8), ["a"])
    assert batch.seeds == [None] and batch.paths == [None]


def test_stylegan_v_protocol_refuses_a_detector_that_is_not_stylegan_v_s(tmp_path, metric_standins,
                                                                         sample_data_dir):
    from workbench.eval.reference import load_suite_metrics
    from workbench.eval.suite import EvalError

    suite = load_suite(SUITES / "smoke.yaml").with_overrides(
        protocol="stylegan-v", fvd_detector=metric_standins["i3d"], clip_model=str(metric_standins["clip"]),
        reference=sample_data_dir)
    with pytest.raises(EvalError, match="needs StyleGAN-V's i3d_torchscript.pt .*sha256 bec6519f66ea534e"):
        load_suite_metrics(suite, cache_dir=tmp_path)
    # the workbench protocol takes any detector and records which one it was
    metrics = load_suite_metrics(suite.with_overrides(protocol="workbench"), cache_dir=tmp_path)
    from workbench.common import file_sha256

    assert metrics.provenance["fvd_detector_sha256"] == file_sha256(metric_standins["i3d"])
    assert metrics.provenance["clip_model_revision"].startswith("sha256:")


def test_prompt_embeddings_encoded_once_give_the_same_videos(tiny_model_dir):
    """Each prompt encoded once (shared across seeds and models) renders the videos a per-call encoding does."""
    from workbench.eval.generation import generate_suite_videos
    from workbench.model.pipeline import load_pipeline
    from workbench.model.families import family_of_model

    pipe = load_pipeline(str(tiny_model_dir), device="cpu", dtype="fp32", family=family_of_model(str(tiny_model_dir)))
    pipe.set_progress_bar_config(disable=True)
    suite = load_suite(SUITES / "smoke.yaml").with_overrides(batch_size=2)  # 3 prompts x 2 seeds, 3 calls
    plain = torch.cat([b.frames for b in generate_suite_videos(pipe, suite, progress=False)])
    cache: dict = {}
    calls = []
    encode = pipe.encode_prompt
    pipe.encode_prompt = lambda *a, **k: calls.append(k.get("prompt", a[0] if a else None)) or encode(*a, **k)
    cached = torch.cat([b.frames for b in generate_suite_videos(pipe, suite, progress=False, embeddings=cache)])
    again = torch.cat([b.frames for b in generate_suite_videos(pipe, suite, progress=False, embeddings=cache)])
    assert sorted(p for call in calls if call for p in call) == sorted(suite.prompts)  # each once, then never
    torch.testing.assert_close(cached, plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, cached, rtol=0, atol=0)


def _png(path: Path, size=(64, 64), seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_images_one_per_prompt_from_the_list_and_a_file(tmp_path):
    _png(tmp_path / "suites" / "img" / "a.png")
    _png(tmp_path / "suites" / "img" / "b.png", seed=1)
    _png(tmp_path / "suites" / "more" / "c.png", seed=2)
    (tmp_path / "suites" / "more" / "images.txt").write_text("c.png\n\n")  # relative to the images file
    (tmp_path / "suites" / "p.txt").write_text("a green dot\n")
    suite = load_suite(write(tmp_path, MINIMAL + "images: [img/a.png, img/b.png]\nprompts_file: p.txt\n"
                                               "images_file: more/images.txt\n"))
    root = tmp_path / "suites"
    assert suite.images == (root / "img" / "a.png", root / "img" / "b.png", root / "more" / "c.png")
    assert [im.size for im in suite.conditioning_images()] == [(64, 64)] * 3
    assert suite.settings()["num_images"] == 3 and load_suite(write(tmp_path, MINIMAL)).images == ()


@pytest.mark.parametrize("images, message", [
    ("[img/a.png]", "1 images for 2 prompts: give one image per prompt"),
    ("[img/a.png, img/nope.png]", "image .*nope.png does not exist"),
    ("img/a.png", "images must be a list of paths"),
])
def test_bad_images_name_the_suite_and_the_fix(tmp_path, images, message):
    _png(tmp_path / "suites" / "img" / "a.png")
    with pytest.raises(SuiteError, match=rf"mine.yaml: .*{message}"):
        load_suite(write(tmp_path, MINIMAL + f"images: {images}\n"))


def test_an_image_that_does_not_decode_is_named_before_generating(tmp_path):
    _png(tmp_path / "suites" / "a.png")
    (tmp_path / "suites" / "b.png").write_bytes(b"not a png")
    suite = load_suite(write(tmp_path, MINIMAL + "images: [a.png, b.png]\n"))
    with pytest.raises(SuiteError, match=r"mine.yaml: images\[1\] .*b.png is not a readable image"):
        suite.conditioning_images()


def test_results_carry_the_per_video_image_metrics(tmp_path):
    suite = Suite(name="s", prompts=("a", "c"), seeds=(0,), num_frames=17, height=64, width=64,
                  images=(_png(tmp_path / "a.png"), _png(tmp_path / "c.png")))
    values = [{"first_frame_psnr": 30.0, "first_frame_ssim": 0.9, "clip_image": 95.0},
              {"first_frame_psnr": 20.0, "first_frame_ssim": 0.5, "clip_image": 85.0}]
    videos = [VideoScore(p, 10.0, 0, i, tmp_path / "videos" / f"00{i}-seed0.mp4", values=v)
              for i, (p, v) in enumerate(zip(suite.prompts, values))]
    scores = SuiteScores(10.0, 100.0, 2, 8, videos, means={"first_frame_psnr": 25.0, "first_frame_ssim": 0.7,
                                                           "clip_image": 90.0})
    results = suite_results(suite, scores, out=tmp_path)
    assert results["metrics"]["eval/first_frame_psnr"] == 25.0 and results["per_video_metrics"] == list(values[0])
    assert results["videos"][1]["first_frame_ssim"] == 0.5 and results["videos"][1]["image"].endswith("c.png")
    md = results_markdown(results)
    assert "| `eval/first_frame_psnr` | 25 |" in md and "| 20.000 | 0.500 | 85.000 |" in md
