"""``workbench quickstart``: the tiny end-to-end job (fine-tune, evaluate, export) on CPU.

Everything lands in ``workdir``: the tiny random CogVideoX (diffusers layout), the sample data,
tiny stand-ins for the CLIP and I3D networks the metrics use, the runs, the eval results and the
export. MLflow logs go to the default store ($MLFLOW_TRACKING_URI, else ./mlflow.db).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

SMOKE_SUITE = Path(__file__).resolve().parents[2] / "evals" / "suites" / "smoke.yaml"


def register(subparsers) -> None:
    p = subparsers.add_parser("quickstart", help="tiny end-to-end fine-tune + eval + export on CPU")
    p.add_argument("--workdir", default="workbench-quickstart", help="where the tiny model, data and runs go")
    p.add_argument("--max-steps", type=int, default=None, help="override the tiny recipe's step count")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    quickstart(Path(ns.workdir), max_steps=ns.max_steps)
    return 0


def quickstart(workdir: Path, max_steps: int | None = None) -> dict:
    """Build what the job needs in ``workdir``, fine-tune LoRA, evaluate, export; print where it all is."""
    from workbench.data.sample_dataset import make_sample_dataset
    from workbench.eval.harness import evaluate
    from workbench.export.job import export
    from workbench.metrics.standins import build_tiny_clip, build_tiny_i3d
    from workbench.model.tiny import save_tiny_model
    from workbench.tracking.runs import mlflow_logger, run_dir
    from workbench.tracking.store import ui_command
    from workbench.train.callbacks import ValidationVideos
    from workbench.train.cli import lightning_cli
    from workbench.train.recipes import recipe_path

    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = save_tiny_model(workdir / "tiny-cogvideox")
    data_dir = workdir / "data"
    if not (data_dir / "metadata.jsonl").is_file():
        make_sample_dataset(data_dir)
    metrics_dir = workdir / "metrics"
    clip_dir, i3d_path = metrics_dir / "tiny-clip", metrics_dir / "tiny-i3d.pt"
    if not (clip_dir / "config.json").is_file():
        build_tiny_clip(clip_dir)
    if not i3d_path.is_file():
        build_tiny_i3d(i3d_path)

    t0 = time.perf_counter()
    print("== 1/3 fine-tune (LoRA, tiny model, CPU)", flush=True)
    args = ["fit", "--config", str(recipe_path("tiny-cpu")), "--model.model", str(model_dir),
            "--data.root", str(data_dir), "--trainer.default_root_dir", str(workdir / "runs")]
    if max_steps is not None:
        args += ["--trainer.max_steps", str(max_steps)]
    trainer = lightning_cli(args).trainer
    logger = mlflow_logger(trainer)
    checkpoint = trainer.checkpoint_callback.last_model_path

    t1 = time.perf_counter()
    print(f"   fine-tune took {t1 - t0:.0f} s", flush=True)
    print("== 2/3 evaluate (smoke suite: CLIP score, FVD; fine-tuned vs base)", flush=True)
    result = evaluate(SMOKE_SUITE, checkpoint, compare_base=True, clip_model=str(clip_dir),
                      fvd_detector=str(i3d_path), reference=str(data_dir),
                      out=workdir / "eval" / logger.run_id, cache_dir=workdir / "fvd-cache",
                      tracking_uri=logger.tracking_uri, progress=False)

    t2 = time.perf_counter()
    print(f"   evaluation took {t2 - t1:.0f} s", flush=True)
    print("== 3/3 export (diffusers LoRA file, merged pipeline, model card, MLflow registry)", flush=True)
    exported = export(checkpoint, workdir / "export" / logger.run_id, merge=True, tracking_uri=logger.tracking_uri,
                      overwrite=True)

    print(f"   export took {time.perf_counter() - t2:.0f} s", flush=True)
    samples = next((cb.last_paths for cb in trainer.callbacks if isinstance(cb, ValidationVideos)), [])
    summary = {
        "run_id": logger.run_id,
        "tracking_uri": logger.tracking_uri,
        "run_dir": str(run_dir(trainer)),
        "checkpoint": checkpoint,
        "samples": [str(p) for p in samples],
        "eval": {k: v for k, v in result.metrics.items()},
        "eval_dir": str(result.out),
        "export_dir": str(exported.out),
        "registered": exported.registered,
    }
    print("\n== workbench quickstart done ==")
    print(f"MLflow run     : {summary['run_id']} in {summary['tracking_uri']} (experiment tiny-cpu)")
    print(f"run directory  : {summary['run_dir']}")
    print(f"last checkpoint: {summary['checkpoint']}")
    for p in summary["samples"]:
        print(f"sample video   : {p}")
    print(f"eval results   : {summary['eval_dir']}  " + ", ".join(f"{k}={v:.4g}" for k, v in summary["eval"].items()
                                                             if isinstance(v, (int, float))))
    print(f"export         : {summary['export_dir']}" + (f" (registered as {exported.registered[0]} "
                                                          f"v{exported.registered[1]})" if exported.registered else ""))
    print(f"generate       : workbench generate --model {exported.out} --prompt \"a red circle moving from "
          "left to right on a dark background\" --frames 9 --height 64 --width 64 --out video.mp4")
    print(f"open the UI    : {ui_command(summary['tracking_uri'])}")
    return summary
