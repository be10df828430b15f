"""The image-to-video families condition training exactly as the stock ``CogVideoXImageToVideoPipeline``
samples: the transformer's image input (scaled, zero-padded, for 1.5 in the padding frame), ``ofs``, and the
per-clip noise that makes a cached and a raw sample alike. Ground truth is the stock pipeline itself: a
forward pre-hook records what it hands the transformer."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image

import diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video as stock_i2v
from workbench.model.families import FamilyError, family_class, family_of_configs, family_of_pipeline
from workbench.model.families.image_to_video import clip_generators
from workbench.model.tiny import build_tiny_pipeline

I2V = ["cogvideox-5b-i2v", "cogvideox1.5-5b-i2v"]


@pytest.fixture(scope="module")
def pipes():
    return {name: build_tiny_pipeline(0, name) for name in I2V}


def a_picture(seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (64, 64, 3), generator=g, dtype=torch.uint8).numpy())


def stock_transformer_inputs(pipe, image, monkeypatch, num_frames=9) -> dict:
    """The keyword arguments the stock pipeline passes the transformer at its first step, with the image's
    latent taken at the posterior's mode (so it is comparable draw-free)."""
    monkeypatch.setattr(stock_i2v, "retrieve_latents", lambda out, generator=None, sample_mode="sample":
                        out.latent_dist.mode())
    seen = {}
    hook = pipe.transformer.register_forward_pre_hook(lambda m, a, kw: seen.update(kw) if not seen else None,
                                                      with_kwargs=True)
    try:
        pipe.set_progress_bar_config(disable=True)
        pipe(image=image, prompt="a red circle", num_frames=num_frames, height=64, width=64, num_inference_steps=1,
             guidance_scale=1.0, max_sequence_length=32, output_type="latent")
    finally:
        hook.remove()
    return seen


@pytest.mark.parametrize("name", I2V)
def test_family_is_read_from_the_configs_and_samples_with_the_i2v_pipeline(pipes, name):
    pipe = pipes[name]
    family = family_of_pipeline(pipe)
    assert family.name == name and family.image_conditioned
    assert family.pipeline_class == type(pipe).__name__ == "CogVideoXImageToVideoPipeline"
    # the text-to-video parent does not claim the I2V model, nor the I2V family a T2V one
    parent = build_tiny_pipeline(0, name.removesuffix("-i2v"))
    assert family_of_configs(parent.transformer.config).name == name.removesuffix("-i2v")


@pytest.mark.parametrize("name, frames", [("cogvideox-5b-i2v", 9), ("cogvideox1.5-5b-i2v", 9),
                                          ("cogvideox1.5-5b-i2v", 13)])
def test_image_latents_and_ofs_are_what_the_stock_pipeline_feeds_the_transformer(pipes, name, frames, monkeypatch):
    pipe = pipes[name]
    family = family_of_pipeline(pipe)
    image = a_picture()
    seen = stock_transformer_inputs(pipe, image, monkeypatch, frames)
    hidden = seen["hidden_states"]
    channels = hidden.shape[2] // 2
    latent_frames = (frames - 1) // 4 + 1
    assert hidden.shape[1] == latent_frames + family.padding_frames(latent_frames)  # 1.5: 3 -> 4; 4 stays 4
    pixels = pipe.video_processor.preprocess(image, height=64, width=64)
    mode = pipe.vae.encode(pixels.unsqueeze(2)).latent_dist.mode()
    ours = family.image_latents(mode, hidden.shape[1])
    torch.testing.assert_close(ours, hidden[:, :, channels:], rtol=1e-5, atol=1e-6)
    # the scaling the references disagree on decides it: multiplied for 5B-I2V, divided for 1.5-I2V
    wrong = mode / family.scaling_factor if name == "cogvideox-5b-i2v" else mode * family.scaling_factor
    assert (family.image_latents(wrong, hidden.shape[1]) - hidden[:, :, channels:]).abs().max() > 0.1
    # and the transformer gets ofs exactly when it has the embedding (1.5-I2V: 2.0)
    kwargs = family.transformer_inputs(hidden[:, :, :channels], ours)
    torch.testing.assert_close(kwargs["hidden_states"], hidden, rtol=1e-5, atol=1e-6)
    if name == "cogvideox1.5-5b-i2v":
        assert float(seen["ofs"]) == float(kwargs["ofs"]) == 2.0
    else:
        assert seen.get("ofs") is None and "ofs" not in kwargs


def test_5b_i2v_learned_positions_fix_the_clip_in_one_line(pipes):
    family = family_of_pipeline(pipes["cogvideox-5b-i2v"])
    family.check_clip(9, 64, 64)  # the tiny model's sample size
    with pytest.raises(FamilyError, match=re.escape(
            "height=48: CogVideoX-5B-I2V's learned positional embeddings fix its clip to 9 frames at 64x64; "
            "use height: 64 (and no buckets)")):
        family.check_clip(9, 48, 64, where="data")
    with pytest.raises(FamilyError, match="num_frames=13: .* use num_frames: 9"):
        family.check_clip(13, 64, 64)
    released = family_class("cogvideox-5b-i2v")({"use_learned_positional_embeddings": True, "sample_frames": 49,
                                                 "sample_height": 60, "sample_width": 90})
    released.check_clip(49, 480, 720)
    family_of_pipeline(pipes["cogvideox1.5-5b-i2v"]).check_clip(13, 48, 64)  # 1.5-I2V: any size in its grid


def test_per_clip_noise_is_seeded_by_the_clip_so_cache_and_raw_agree(pipes):
    pipe = pipes["cogvideox1.5-5b-i2v"]
    family = family_of_pipeline(pipe)
    video = torch.rand(2, 3, 9, 64, 64) * 2 - 1
    with torch.no_grad():
        a = family.encode_clips(pipe.vae, video, ids=["x.mp4", "y.mp4"])
        b = family.encode_clips(pipe.vae, video, ids=["x.mp4", "y.mp4"])
        c = family.encode_clips(pipe.vae, video, ids=["z.mp4", "y.mp4"])
    torch.testing.assert_close(a["image_latent_dist"], b["image_latent_dist"])
    assert not torch.equal(a["image_latent_dist"][0], c["image_latent_dist"][0])
    torch.testing.assert_close(a["image_latent_dist"][1], c["image_latent_dist"][1])
    torch.testing.assert_close(a["image"], video[:, :, 0])  # no image given: the clip's first frame
    # the noise is small (sigma = exp(N(-3, 0.5)), about 0.05) but there
    noised = family.noised_images(video[:, :, 0], clip_generators(["x.mp4", "y.mp4"]))
    assert 0 < (noised - video[:, :, 0]).std() < 0.5
    with pytest.raises(ValueError, match="each clip.s id"):
        family.encode_clips(pipe.vae, video)


def test_a_text_to_video_family_refuses_image_latents():
    family = family_class("cogvideox-5b")({"max_text_seq_length": 226})
    with pytest.raises(ValueError, match="text-to-video family"):
        family.transformer_inputs(torch.zeros(1, 2, 4, 8, 8), torch.zeros(1, 2, 4, 8, 8))
    i2v = family_class("cogvideox-5b-i2v")({"max_text_seq_length": 226})
    with pytest.raises(ValueError, match="needs image latents"):
        i2v.transformer_inputs(torch.zeros(1, 2, 4, 8, 8))


# -- data: the optional image column ---------------------------------------------------------------------

def write_dataset(root, layout: str, images: list[str | None]):
    """A dataset folder of ``len(images)`` entries (no videos needed to read the manifest) in ``layout``."""
    import csv
    import json

    root.mkdir(parents=True, exist_ok=True)
    names = [f"v{i}.mp4" for i in range(len(images))]
    if layout == "jsonl":
        rows = [{"file_name": n, "caption": f"c{i}", **({"image": im} if im is not None else {})}
                for i, (n, im) in enumerate(zip(names, images))]
        (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif layout == "csv":
        with open(root / "metadata.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file_name", "caption", "image"])
            w.writerows([n, f"c{i}", im or ""] for i, (n, im) in enumerate(zip(names, images)))
    else:
        (root / "videos.txt").write_text("\n".join(names) + "\n")
        (root / "prompts.txt").write_text("\n".join(f"c{i}" for i in range(len(names))) + "\n")
        (root / "images.txt").write_text("\n".join(im or "" for im in images) + "\n")
    return root


@pytest.mark.parametrize("layout", ["jsonl", "csv", "cogvideo"])
def test_every_manifest_layout_reads_an_optional_image(tmp_path, layout):
    from workbench.data.manifest import read_manifest

    root = write_dataset(tmp_path / layout, layout, ["first/0.png", None, " 2.jpg "])
    assert [e.image for e in read_manifest(root)] == ["first/0.png", None, "2.jpg"]
    assert read_manifest(root)[0].image_path(root) == root / "first/0.png"


def test_images_txt_shorter_than_videos_txt_is_an_error(tmp_path):
    from workbench.data.manifest import ManifestError, read_manifest

    root = write_dataset(tmp_path / "d", "cogvideo", ["a.png", "b.png", "c.png"])
    (root / "images.txt").write_text("a.png\n")
    with pytest.raises(ManifestError, match="images.txt: 1 lines for 3 videos"):
        read_manifest(root)


def test_an_image_outside_the_root_is_refused_like_a_video(tmp_path):
    from workbench.data.manifest import ManifestError, read_manifest, refuse_paths_outside_root

    root = write_dataset(tmp_path / "d", "jsonl", ["../secret.png", "ok.png"])
    with pytest.raises(ManifestError, match=r"v0.mp4 \(metadata.jsonl:1\): path leaves the dataset root .*"
                                            r"\(image ../secret.png\)"):
        refuse_paths_outside_root(read_manifest(root), root, "fit")


def test_dataset_loads_the_named_image_at_the_clip_size_and_cache_notices_a_changed_image(tmp_path, sample_data_dir):
    import json
    import shutil

    from workbench.data.cache import CacheError, check_images
    from workbench.data.dataset import SampleError, VideoCaptionDataset
    from workbench.data.manifest import read_manifest

    root = tmp_path / "d"
    shutil.copytree(sample_data_dir, root, ignore=shutil.ignore_patterns(".workbench-cache"))
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    Image.new("RGB", (128, 96), (255, 0, 0)).save(root / "red.png")
    rows[0]["image"], rows[1]["image"] = "red.png", "gone.png"
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    entries = read_manifest(root)
    ds = VideoCaptionDataset(root, entries, 9, 64, 64, 8)
    sample = ds.load(0)
    assert sample["image"].shape == (3, 64, 64)
    torch.testing.assert_close(sample["image"][0], torch.ones(64, 64))  # red, in [-1, 1]
    torch.testing.assert_close(sample["image"][1], -torch.ones(64, 64))
    assert "image" not in ds.load(2)  # no image: the family takes the clip's first frame
    with pytest.raises(SampleError, match=r"\(metadata.jsonl:2\): image gone.png: no such file"):
        ds.load(1)
    index = {"entries": [{"file_name": e.file_name, "image": e.image} for e in entries]}
    check_images(root, index, entries)  # unchanged: fine
    rows[0]["image"] = None
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CacheError, match="1 clips have another image than when the cache was made"):
        check_images(root, index, read_manifest(root))


def test_eval_refuses_an_image_to_video_model_and_a_suite_without_images_in_one_line(pipes):
    from workbench.eval.generation import EvalError, generate_suite_videos
    from workbench.eval.suite import load_suite

    from tests.conftest import REPO

    suite = load_suite(REPO / "evals" / "suites" / "smoke.yaml")  # 17 frames at 64x64: inside the tiny 1.5's grid
    with pytest.raises(EvalError, match=r"suite smoke \(images: or images_file:, evals/README.md\): CogVideoX1.5-5B-I2V is an "
                                        r"image-to-video model: give one conditioning image per prompt \(3 prompts, 0 images\)"):
        next(iter(generate_suite_videos(pipes["cogvideox1.5-5b-i2v"], suite, progress=False)))  # a generator
