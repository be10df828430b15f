"""Run a CogVideoX recipe end to end at real size on one GPU, under the A6000's 48 GiB.

Builds a pipeline of the recipe's model family (CogVideoX-2B, 5B or 1.5-5B: ``--family``, else the recipe's
``model.family``) with the real configs and random weights (transformer, the 3D VAE, a T5-XXL encoder; a
locally trained T5-style tokenizer) and saves it in diffusers layout, writes sample clips of the family's
native clip, then runs `workbench fit --config RECIPE` on them exactly as
a user would (`data.cache: auto` encodes the cache first), with the process capped at 48 GiB,
for a few steps with one validation and one round of sample videos. Prints what the run logged to
MLflow: step time, peak GPU memory, validation loss, the artifacts.

    python benchmarks/recipe_real_size.py --recipe recipes/cogvideox-2b-lora-a6000.yaml --steps 20
    python benchmarks/recipe_real_size.py --recipe recipes/cogvideox-5b-lora-a6000.yaml --steps 12
    python benchmarks/recipe_real_size.py --recipe recipes/cogvideox1.5-5b-lora-a6000.yaml --steps 6
    python benchmarks/recipe_real_size.py --recipe recipes/cogvideox-5b-i2v-lora-a6000.yaml --steps 6
    python benchmarks/recipe_real_size.py --recipe recipes/cogvideox1.5-5b-i2v-lora-a6000.yaml --steps 2 --clips 2

An image-to-video recipe (5B-I2V, 1.5-I2V) gets a CogVideoXImageToVideoPipeline of its family, clips whose
manifest names a conditioning image each (a PNG at the clip's size: datasets/README.md's ``image`` field), and a
validation video that starts from a PNG at the clip's size (ValidationVideos ``images``).

Without a GPU (a dry run of this script on a tiny model: ``--model DIR --size 9x64x64``) the recipe runs on the
CPU, uncompiled.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml


# What each family's released configs change against diffusers' defaults (= CogVideoX-2B's): transformer
# (benchmarks/real_size.py's REAL_CONFIGS), VAE and scheduler (workbench/model/tiny.py's FAMILY_CHANGES).
FAMILIES = {"cogvideox-2b": "2b", "cogvideox-5b": "5b", "cogvideox1.5-5b": "1.5", "cogvideox-5b-i2v": "5b-i2v",
            "cogvideox1.5-5b-i2v": "1.5-i2v"}


def build_real_size_model(out: Path, family: str = "cogvideox-2b") -> Path:
    """A family's real configs, random weights, saved as a diffusers pipeline (bf16, safetensors)."""
    import diffusers
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_size import REAL_CONFIGS

    from workbench.model.families import family_class
    from workbench.model.tiny import COGVIDEOX_2B_SCHEDULER, FAMILY_CHANGES, t5_style_tokenizer

    if (out / "model_index.json").is_file():
        return out
    _, vae_changes, scheduler_changes = FAMILY_CHANGES[family]
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 directly, as from_pretrained(torch_dtype=) loads
    try:
        with torch.device("cuda"):
            transformer = CogVideoXTransformer3DModel(**REAL_CONFIGS[FAMILIES[family]])
            vae = AutoencoderKLCogVideoX(**vae_changes)
            t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                                         num_heads=64, feed_forward_proj="gated-gelu",
                                         relative_attention_num_buckets=32))
    finally:
        torch.set_default_dtype(default)
    tokenizer = t5_style_tokenizer(Path(tempfile.mkdtemp()))
    tokenizer.model_max_length = 226  # the released tokenizer configs
    scheduler = CogVideoXDDIMScheduler(**{**COGVIDEOX_2B_SCHEDULER, **scheduler_changes})
    pipeline_class = getattr(diffusers, family_class(family).pipeline_class)  # CogVideoXImageToVideoPipeline for I2V
    pipe = pipeline_class(tokenizer=tokenizer, text_encoder=t5, vae=vae, transformer=transformer, scheduler=scheduler)
    pipe.save_pretrained(out, safe_serialization=True)
    del pipe, transformer, vae, t5
    torch.cuda.empty_cache()
    return out


def write_image(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """A PNG of ``height`` x ``width``: a colour gradient with a disc, something an encoder sees structure in."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x / width, y / height, np.full_like(x, rng.uniform(), dtype=float)], -1) * 255
    cy, cx, r = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width, min(height, width) / 6
    img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.astype(np.uint8)).save(path)
    return path


def add_images(data: Path, height: int, width: int) -> None:
    """Give every clip of the sample dataset a conditioning image (``image`` in metadata.jsonl, a PNG under
    frames/), as an image-to-video dataset names them (datasets/README.md)."""
    manifest = data / "metadata.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    for i, row in enumerate(rows):
        row["image"] = f"frames/{i:03d}.png"
        write_image(data / row["image"], height, width, seed=i)
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))


def run_recipe(recipe: Path, model: Path, data: Path, work: Path, steps: int, cap_gib: float,
               sample_steps: int, size: tuple[int, int, int] | None = None,
               image: Path | None = None) -> subprocess.CompletedProcess:
    cfg = yaml.safe_load(recipe.read_text())
    if size is not None:  # clips of another size than the recipe's (a dry run on a tiny model)
        cfg["data"].update(num_frames=size[0], height=size[1], width=size[2])
        cfg["data"].pop("buckets", None)  # the recipe's buckets are real sizes
    if not torch.cuda.is_available():  # a dry run on the CPU: no GPU, no compiler
        cfg["trainer"]["accelerator"] = "cpu"
        # no compile; no VAE tiling (a tiny VAE's tiles are 32 pixels: tiled, a 64-pixel clip encodes to 9 latents)
        cfg["model"].setdefault("speed", {}).update(compile_blocks=False, vae_tiling=False)
        cfg["data"]["num_workers"] = 0
    cfg["trainer"].update(max_steps=steps, val_check_interval=steps, check_val_every_n_epoch=None, log_every_n_steps=1,
                          default_root_dir=str(work / "runs"))
    cfg["trainer"]["logger"]["init_args"]["tracking_uri"] = f"sqlite:///{work / 'mlflow.db'}"
    for cb in cfg["trainer"]["callbacks"]:
        args = cb.setdefault("init_args", {})
        if cb["class_path"].endswith("ValidationVideos"):  # one video, fewer denoising steps: this checks memory
            args.update(prompts=args["prompts"][:1], num_inference_steps=sample_steps, every_n_validations=1)
            if size is not None:
                args.update(num_frames=size[0], height=size[1], width=size[2])
            if args.get("images") is not None or image is not None:  # image-to-video: the video starts from it
                args["images"] = [str(image)]
        if cb["class_path"].endswith("ModelCheckpoint"):
            args.update(every_n_train_steps=steps)
        if cb["class_path"].endswith("StepStats"):
            args.update(log_every_n_steps=1)
    # One validation sample at one timestep (the loss's shape is the training step's: memory is what this checks),
    # so the validation video, the stage that matters at real size, fits the device's 10-minute call.
    cfg["model"].setdefault("validation", {})["timesteps"] = 1
    cfg["data"]["val_samples"] = 1
    cfg["model"]["model"] = str(model)
    cfg["data"]["root"] = str(data)
    run_cfg = work / "recipe.yaml"
    run_cfg.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # the cap is set in the process that trains, before anything touches the GPU
    code = ("import sys, torch\n"
            "if torch.cuda.is_available():\n"
            "    total = torch.cuda.get_device_properties(0).total_memory\n"
            f"    torch.cuda.set_per_process_memory_fraction(min(1.0, {cap_gib} * 2**30 / total))\n"
            "from workbench.cli import main\n"
            "sys.argv = ['workbench'] + sys.argv[1:]\n"
            "sys.exit(main())\n")
    return subprocess.run([sys.executable, "-c", code, "fit", "--config", str(run_cfg)], cwd=work)


def summarize(work: Path) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    run = max(runs, key=lambda r: r.info.start_time)
    hist = {k: [m.value for m in client.get_metric_history(run.info.run_id, k)]
            for k in ("perf/step_time_s", "perf/gpu_peak_gib", "perf/gpu_reserved_peak_gib", "val/loss", "train/loss")}
    times = sorted(hist["perf/step_time_s"][5:]) or [float("nan")]  # after compilation and warm-up
    artifacts = []
    stack = [""]
    while stack:
        for a in client.list_artifacts(run.info.run_id, stack.pop() or None):
            (stack.append(a.path) if a.is_dir else artifacts.append(a.path))
    return {"run_id": run.info.run_id, "status": run.info.status, "steps_logged": len(hist["train/loss"]),
            "median_step_s_after_step5": times[len(times) // 2],
            "peak_gib": max(hist["perf/gpu_peak_gib"], default=None),
            "reserved_peak_gib": max(hist["perf/gpu_reserved_peak_gib"], default=None), "val_loss": hist["val/loss"],
            "artifacts": sorted(artifacts),
            "checkpoints": {str(p.relative_to(work)): round(p.stat().st_size / 2**20, 1)
                            for p in sorted(work.glob(f"runs/{run.info.run_id}/**/*.ckpt"))}}  # this run's only


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="recipes/cogvideox-2b-lora-a6000.yaml")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cap-gib", type=float, default=48.0)
    p.add_argument("--sample-steps", type=int, default=10, help="denoising steps of the validation sample video")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--model", help="use this diffusers model directory instead of building the real-size one "
                                   "(with --size, for a dry run of this script on the tiny model)")
    p.add_argument("--size", default=None, help="FRAMESxHEIGHTxWIDTH of the sample clips (default: the family's "
                                                "native clip)")
    p.add_argument("--family", default=None, choices=list(FAMILIES),
                   help="the model family to build (default: the recipe's model.family, else cogvideox-2b)")
    p.add_argument("--work", default="/tmp/recipe_real_size")
    p.add_argument("--out", default="recipe_real_size.json")
    a = p.parse_args()
    from workbench.shapes.sample_dataset import make_sample_dataset

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    from workbench.model.families import family_class

    recipe_family = yaml.safe_load(Path(a.recipe).read_text())["model"].get("family", "auto")
    family = a.family or (recipe_family if recipe_family in FAMILIES else "cogvideox-2b")
    native = family_class(family).native
    model = Path(a.model) if a.model else build_real_size_model(work / f"{family}-random", family)
    t_model = time.perf_counter() - t0
    frames, height, width = ((int(v) for v in a.size.split("x")) if a.size else
                             (native.num_frames, native.height, native.width))
    i2v = family_class(family).image_conditioned
    # the families of one --work share the clips of one size (image-to-video ones with their images)
    data = work / f"data-{frames}x{height}x{width}{'-i2v' if i2v else ''}"
    if not (data / "metadata.jsonl").is_file():
        make_sample_dataset(data, num_clips=a.clips, num_frames=frames, fps=native.fps, height=height, width=width)
        if i2v:
            add_images(data, height, width)
    image = write_image(work / f"validation-{height}x{width}.png", height, width, seed=99) if i2v else None
    t0 = time.perf_counter()
    proc = run_recipe(Path(a.recipe), model, data, work, a.steps, a.cap_gib, a.sample_steps,
                      size=(frames, height, width) if a.size else None, image=image)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result = {"recipe": a.recipe, "family": family, "device": device, "cap_gib": a.cap_gib,
              "returncode": proc.returncode, "fit_wall_s": time.perf_counter() - t0, "build_model_s": t_model}
    try:
        result.update(summarize(work))
    except Exception as e:  # noqa: BLE001 - report what could be read
        result["summary_error"] = repr(e)[:300]
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
