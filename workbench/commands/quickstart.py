"""``workbench quickstart``: proof, on a CPU, that fine-tuning teaches a model a new domain.

The shipped miniature CogVideoX of the shapes world (workbench/shapes/weights/miniature) never saw a
yellow shape. The quickstart

1. writes the fine-tune data (yellow clips plus a replay of red, green and blue ones) and held-out
   reference clips of both domains (``workdir/data``, ``workdir/reference``);
2. fine-tunes a LoRA on the miniature (``recipes/shapes-lora-cpu.yaml``, from the latent cache);
3. evaluates base and fine-tuned on the held-out domain (``evals/suites/shapes-held-out.yaml``) and on
   the pretraining domain (``shapes-pretrain.yaml``, to measure forgetting): the oracle's prompt accuracy,
   FVD with the learned detector, CLIP score with the learned CLIP;
4. exports it (LoRA file, merged pipeline, model card, MLflow registry);
5. prints the before/after table and writes a side-by-side of base vs fine-tuned videos (same prompts
   and seeds) as a PNG grid and an mp4, logged to the MLflow run.

MLflow logs go to the default store ($MLFLOW_TRACKING_URI, else ./mlflow.db).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

FINETUNE_CLIPS = 24  # yellow: every shape x direction, twice
REPLAY_CLIPS = 8  # red, green, blue: a quarter of the fine-tune data, against forgetting
REFERENCE_CLIPS = 24  # per domain, not used for training


def register(subparsers) -> None:
    p = subparsers.add_parser("quickstart", help="CPU proof that fine-tuning works: LoRA on the shapes-world "
                              "miniature, evaluated before/after, exported",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="workbench-quickstart", help="where data, runs, results and exports go")
    p.add_argument("--max-steps", type=int, default=None, help="override the recipe's step count")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    quickstart(Path(ns.workdir), max_steps=ns.max_steps)
    return 0


def write_quickstart_data(workdir: Path) -> dict[str, Path]:
    """The fine-tune dataset and the two reference sets (each a different seed: no clip is in two of them)."""
    from workbench.shapes.sample_dataset import write_shapes_dataset
    from workbench.shapes.miniature import FPS, HEIGHT, NUM_FRAMES, WIDTH
    from workbench.shapes.world import HELD_OUT_COLOURS, PRETRAIN_COLOURS, SceneSampler

    size = dict(num_frames=NUM_FRAMES, fps=FPS, height=HEIGHT, width=WIDTH)
    sets = {
        "data": (SceneSampler(colours=HELD_OUT_COLOURS, seed=1).scenes(FINETUNE_CLIPS)
                 + SceneSampler(colours=PRETRAIN_COLOURS, seed=2).scenes(REPLAY_CLIPS),
                 "quickstart fine-tune data: yellow shapes + a replay of the pretraining colours"),
        "reference/held-out": (SceneSampler(colours=HELD_OUT_COLOURS, seed=3).scenes(REFERENCE_CLIPS),
                               "reference clips of the held-out domain (yellow)"),
        "reference/pretrain": (SceneSampler(colours=PRETRAIN_COLOURS, seed=4).scenes(REFERENCE_CLIPS),
                               "reference clips of the pretraining domain (red, green, blue)"),
    }
    paths = {}
    for name, (scenes, title) in sets.items():
        folder = workdir / name
        if not (folder / "metadata.jsonl").is_file():
            write_shapes_dataset(folder, scenes, title=title, workers=2, **size)
        paths[name] = folder
    return paths


def quickstart(workdir: Path, max_steps: int | None = None) -> dict:
    """The whole job (see the module doc); returns the summary it prints."""
    from workbench.eval.harness import evaluate
    from workbench.eval.suite import load_suite, suite_path
    from workbench.export.job import export
    from workbench.shapes.miniature import CLIP_DIR, DETECTOR_PATH, MINIATURE_DIR
    from workbench.eval.showcase import before_after_table, side_by_side
    from workbench.tracking.runs import mlflow_logger, run_dir
    from workbench.tracking.store import ui_command
    from workbench.train.cli import lightning_cli
    from workbench.train.recipes import recipe_path

    suites = {d: suite_path(f"shapes-{d}") for d in ("held-out", "pretrain")}  # checkout or installed package
    for suite in suites.values():
        load_suite(suite)  # a missing suite stops here, not after the fine-tune
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print("== 1/4 data: yellow shapes (held out of the miniature's pretraining) + replay, reference clips",
          flush=True)
    paths = write_quickstart_data(workdir)

    print("== 2/4 fine-tune: LoRA on the shapes-world miniature CogVideoX (CPU)", flush=True)
    args = ["fit", "--config", str(recipe_path("shapes-lora-cpu")), "--model.model", str(MINIATURE_DIR),
            "--data.root", str(paths["data"]), "--trainer.default_root_dir", str(workdir / "runs")]
    if max_steps is not None:
        args += ["--trainer.max_steps", str(max_steps)]
    trainer = lightning_cli(args).trainer
    logger = mlflow_logger(trainer)
    checkpoint = trainer.checkpoint_callback.last_model_path
    t1 = time.perf_counter()
    print(f"   fine-tune took {t1 - t0:.0f} s (data included)", flush=True)

    print("== 3/4 evaluate base vs fine-tuned: held-out domain and pretraining domain", flush=True)
    results = {}
    for domain in ("held-out", "pretrain"):
        results[domain] = evaluate(
            suites[domain], checkpoint, compare_base=True, clip_model=str(CLIP_DIR),
            fvd_detector=str(DETECTOR_PATH), reference=str(paths[f"reference/{domain}"]),
            out=workdir / "eval" / logger.run_id / domain, cache_dir=workdir / "fvd-cache",
            tracking_uri=logger.tracking_uri, progress=False)
    t2 = time.perf_counter()
    print(f"   evaluation took {t2 - t1:.0f} s", flush=True)

    print("== 4/4 export (diffusers LoRA file, merged pipeline, model card, MLflow registry)", flush=True)
    exported = export(checkpoint, workdir / "export" / logger.run_id, merge=True, tracking_uri=logger.tracking_uri,
                      overwrite=True)
    t3 = time.perf_counter()
    print(f"   export took {t3 - t2:.0f} s", flush=True)

    table = before_after_table({d: r.metrics for d, r in results.items()})
    shown = side_by_side(results["held-out"].out, workdir / "eval" / logger.run_id / "side-by-side")
    logger.log_artifact(shown["png"], "quickstart")
    logger.log_artifact(shown["mp4"], "quickstart")
    def absolute(path) -> str:  # summary.json is read from other folders (tests, scripts): no relative paths
        return str(Path(path).resolve())

    summary = {
        "run_id": logger.run_id, "tracking_uri": logger.tracking_uri, "run_dir": absolute(run_dir(trainer)),
        "checkpoint": absolute(checkpoint), "eval": {d: r.metrics for d, r in results.items()},
        "eval_dirs": {d: absolute(r.out) for d, r in results.items()}, "export_dir": absolute(exported.out),
        "registered": exported.registered, "side_by_side": {k: absolute(v) for k, v in shown.items()},
        "seconds": {"fine_tune": round(t1 - t0, 1), "eval": round(t2 - t1, 1), "export": round(t3 - t2, 1)},
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (workdir / "summary.md").write_text(table + "\n")
    print("\n== workbench quickstart done ==\n")
    print(f"MLflow run     : {summary['run_id']} in {summary['tracking_uri']} (experiment shapes-lora)")
    print(f"run directory  : {summary['run_dir']}")
    print(f"last checkpoint: {checkpoint}")
    for domain, folder in summary["eval_dirs"].items():
        print(f"eval ({domain:8s}): {folder}/results.md")
    print(f"side by side   : {shown['png']} and {shown['mp4']} (base | fine-tuned, same prompts and seeds)")
    print(f"export         : {exported.out}" + (f" (registered as {exported.registered[0]} "
                                               f"v{exported.registered[1]})" if exported.registered else ""))
    print(f"generate       : workbench generate --model {exported.out} --prompt \"a yellow circle moving from "
          "left to right on a dark background\" --frames 17 --height 64 --width 64 --steps 25 --out video.mp4")
    print(f"open the UI    : {ui_command(summary['tracking_uri'])}")
    print(f"took           : {process_seconds():.0f} s in all, since this process started (imports included)")
    print()
    print(table)  # the result, last on the screen
    return summary


def process_seconds() -> float:
    """Wall seconds since this process started (psutil, which PEFT already needs)."""
    import psutil

    return time.time() - psutil.Process().create_time()
