"""``workbench shapes make --out DIR``: make the shapes world's shipped models (on a GPU).

Stages (each skipped when its output exists, so a run can be resumed; ``--stages`` picks some):

* ``data``: the miniature's pretraining dataset, ``pretrain-data/`` (mp4 + metadata.jsonl; red, green and
  blue shapes only: yellow is held out of the transformer's data);
* ``vae``: the VAE trained to reconstruct clips of every colour (workbench.shapes.vae);
* ``detector``, ``clip``: the learned FVD feature network and CLIP-slot model (workbench.shapes.detector,
  workbench.shapes.clip), trained on every colour too;
* ``init``: the untrained miniature pipeline (workbench.shapes.miniature.init_miniature);
* ``fit``: ``workbench fit --config recipes/shapes-pretrain.yaml`` on it (mode: full, from the cache);
* ``finalize``: the trained pipeline, compact, with its model card: ``miniature/``;
* ``judge``: the oracle's prompt accuracy of the result on the pretraining and held-out domains.

Every seed is fixed; ``reports/<stage>.json`` holds each stage's settings, figures and seconds (one file a
stage, so stages may run in parallel processes, e.g. ``detector`` and ``clip`` beside ``vae``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from workbench.common import UserError
from workbench.shapes.miniature import FPS, HEIGHT, NUM_FRAMES, WIDTH, directory_megabytes
from workbench.shapes.world import HELD_OUT_COLOURS, PRETRAIN_COLOURS, SceneSampler, prompts

STAGES = ("data", "vae", "detector", "clip", "init", "fit", "finalize", "judge")
REPO = Path(__file__).resolve().parents[2]
CARD = Path(__file__).resolve().parents[1] / "shapes" / "MODEL_CARD.md"


def _log(msg: str) -> None:
    print(f"[make {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stage_data(out: Path, a) -> dict:
    from workbench.shapes.sample_dataset import write_shapes_dataset

    scenes = SceneSampler(colours=PRETRAIN_COLOURS, seed=a.seed).scenes(a.clips)
    write_shapes_dataset(out / "pretrain-data", scenes, num_frames=NUM_FRAMES, fps=FPS, height=HEIGHT, width=WIDTH,
                         title="shapes world: pretraining domain", workers=a.workers,
                         use="The miniature's pretraining data (red, green, blue; yellow held out).")
    return {"clips": a.clips, "colours": list(PRETRAIN_COLOURS)}


# Half the probe's widths at full resolution: decoding a 17x64x64 clip on a 2-core CPU costs about half
# as much, which the CPU quickstart needs (it decodes every video it evaluates).
VAE_WIDTHS = (16, 32, 32, 64)


def stage_vae(out: Path, a) -> dict:
    from workbench.shapes.vae import VAE_CONFIG, train_vae

    return train_vae(out / "vae", steps=a.vae_steps, batch_size=a.vae_batch, seed=a.seed, device=a.device,
                     config={**VAE_CONFIG, "block_out_channels": VAE_WIDTHS})


def stage_detector(out: Path, a) -> dict:
    from workbench.shapes.detector import train_detector

    (out / "metric-nets").mkdir(parents=True, exist_ok=True)
    return train_detector(out / "metric-nets" / "shapes-i3d.pt", steps=a.detector_steps, batch_size=64,
                          seed=a.seed, device=a.device)


def stage_clip(out: Path, a) -> dict:
    from workbench.shapes.clip import train_clip

    return train_clip(out / "metric-nets" / "shapes-clip", steps=a.clip_steps, batch_size=256, seed=a.seed,
                      device=a.device)


def stage_init(out: Path, a) -> dict:
    from workbench.shapes.miniature import init_miniature

    init_miniature(out / "init", out / "vae", seed=a.seed)
    return {"seed": a.seed}


def stage_fit(out: Path, a) -> dict:
    cmd = [sys.executable, "-m", "workbench.cli", "fit", "--config", str(REPO / "recipes" / "shapes-pretrain.yaml"),
           "--model.model", str(out / "init"), "--data.root", str(out / "pretrain-data"),
           "--trainer.default_root_dir", str(out / "runs"), "--trainer.logger.init_args.save_dir", str(out / "runs"),
           "--trainer.max_steps", str(a.fit_steps), *a.fit_args]
    _log(" ".join(cmd))
    subprocess.run(cmd, check=True)
    ckpt = max((out / "runs").rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    return {"steps": a.fit_steps, "checkpoint": str(ckpt.relative_to(out)), "command": " ".join(cmd[1:])}


def stage_finalize(out: Path, a) -> dict:
    from workbench.shapes.miniature import finalize_miniature

    ckpt = max((out / "runs").rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    card = CARD.read_text()
    finalize_miniature(out / "init", ckpt, out / "miniature", card)
    return {"megabytes": directory_megabytes(out / "miniature")}


def judge(model_dir: str | Path, *, device: str, seeds: tuple[int, ...] = (0, 1), steps: int = 25,
          guidance: float = 6.0, scheduler: str = "dpm", batch: int = 48, grid: Path | None = None) -> dict:
    """Oracle prompt accuracy of a pipeline on the pretraining and held-out domains (every prompt x seed)."""
    import torch
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler, CogVideoXPipeline

    from workbench.model.families import Clip, family_of_pipeline
    from workbench.model.pipeline import render_videos
    from workbench.shapes.oracle import prompt_accuracy

    dtype = torch.float32
    pipe = CogVideoXPipeline.from_pretrained(str(model_dir), torch_dtype=dtype, use_safetensors=True).to(device)
    family, clip = family_of_pipeline(pipe), Clip(NUM_FRAMES, HEIGHT, WIDTH, FPS)
    cls = {"dpm": CogVideoXDPMScheduler, "ddim": CogVideoXDDIMScheduler}[scheduler]
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    result, shown = {}, {}
    for domain, colours in (("pretrain", PRETRAIN_COLOURS), ("held_out", HELD_OUT_COLOURS)):
        jobs = [(p, s) for p in prompts(colours) for s in seeds]
        videos, texts = [], []
        for i in range(0, len(jobs), batch):
            chunk = jobs[i:i + batch]
            videos += list(render_videos(pipe, family, [p for p, _ in chunk], [s for _, s in chunk], clip,
                                         steps=steps, guidance=guidance))
            texts += [p for p, _ in chunk]
        acc = prompt_accuracy(videos, texts)
        result[domain] = {"videos": acc.num_videos, **acc.total}
        shown[domain] = videos[::max(1, len(videos) // 8)][:8]
    if grid is not None:
        _frames_grid(shown, grid)
    return result


def _frames_grid(videos: dict, path: Path) -> None:
    """A PNG: per domain, rows of videos, each as its first, middle and last frame."""
    import numpy as np
    from PIL import Image

    rows = []
    for vids in videos.values():
        for v in vids:
            f = v.shape[0]
            rows.append(np.concatenate([(v[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                                        for i in (0, f // 2, f - 1)], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def stage_judge(out: Path, a) -> dict:
    return {s: judge(out / "miniature", device=a.device, scheduler=s, steps=a.judge_steps,
                     grid=out / "reports" / f"judge-{s}.png") for s in ("dpm", "ddim")}


def register(subparsers) -> None:
    shapes = subparsers.add_parser("shapes", help="the shapes world: make its miniature models")
    sub = shapes.add_subparsers(dest="shapes_command", metavar="SHAPES_COMMAND")
    p = sub.add_parser("make", help="train the miniature CogVideoX and the metric networks (GPU)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="work folder (its miniature/ and metric-nets/ are what ships)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=int, default=2048, help="pretraining clips")
    p.add_argument("--workers", type=int, default=8, help="threads writing mp4s")
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--detector-steps", type=int, default=3000)
    p.add_argument("--clip-steps", type=int, default=4000)
    p.add_argument("--fit-steps", type=int, default=4000)
    p.add_argument("--judge-steps", type=int, default=25, help="denoising steps of the judged videos")
    p.add_argument("--fit-args", nargs=argparse.REMAINDER, default=[], help="more `workbench fit` arguments")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reports").mkdir(exist_ok=True)
    done = {"data": out / "pretrain-data" / "metadata.jsonl", "vae": out / "vae" / "config.json",
            "detector": out / "metric-nets" / "shapes-i3d.pt", "clip": out / "metric-nets" / "shapes-clip" / "config.json",
            "init": out / "init" / "model_index.json", "fit": None, "finalize": out / "miniature" / "model_index.json",
            "judge": None}
    for name in a.stages.split(","):
        if name not in STAGES:
            raise UserError(f"--stages: unknown stage {name!r}; stages: {', '.join(STAGES)}")
        if done[name] is not None and done[name].exists():
            _log(f"{name}: done already ({done[name]})")
            continue
        if name == "fit" and any((out / "runs").rglob("last.ckpt")):
            _log("fit: done already")
            continue
        _log(f"{name} ...")
        t0 = time.perf_counter()
        figures = {**(globals()[f"stage_{name}"](out, a) or {}), "seconds": round(time.perf_counter() - t0, 1)}
        (out / "reports" / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
        _log(f"{name}: {json.dumps(figures, default=str)[:600]}")
    return 0
