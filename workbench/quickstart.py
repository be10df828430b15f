"""``workbench quickstart``: the tiny end-to-end job (fine-tune, evaluate, export) on CPU."""

from __future__ import annotations

from pathlib import Path


def quickstart(workdir: Path, max_steps: int | None = None) -> dict:
    """Build the tiny model and sample data in ``workdir``, fine-tune LoRA, report where things are."""
    from workbench.cli import lightning_cli
    from workbench.data.sample import make_sample_dataset
    from workbench.lit.callbacks import SampleVideos, run_dir
    from workbench.model.tiny import save_tiny_model
    from workbench.recipes import recipe_path
    from workbench.tracking import mlflow_logger, ui_command

    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = save_tiny_model(workdir / "tiny-cogvideox")
    data_dir = workdir / "data"
    if not (data_dir / "metadata.jsonl").is_file():
        make_sample_dataset(data_dir)
    args = ["fit", "--config", str(recipe_path("tiny-cpu")), "--model.model", str(model_dir),
            "--data.root", str(data_dir), "--trainer.default_root_dir", str(workdir / "runs")]
    if max_steps is not None:
        args += ["--trainer.max_steps", str(max_steps)]
    cli = lightning_cli(args)
    trainer = cli.trainer
    logger = mlflow_logger(trainer)
    directory = run_dir(trainer)
    samples = next((cb.last_paths for cb in trainer.callbacks if isinstance(cb, SampleVideos)), [])
    summary = {
        "run_id": logger.run_id,
        "tracking_uri": logger.tracking_uri,
        "run_dir": str(directory),
        "checkpoint": trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else None,
        "samples": [str(p) for p in samples],
    }
    print("\n== workbench quickstart done ==")
    print(f"MLflow run     : {summary['run_id']} in {summary['tracking_uri']} (experiment tiny-cpu)")
    print(f"run directory  : {summary['run_dir']}")
    print(f"last checkpoint: {summary['checkpoint']}")
    for p in summary["samples"]:
        print(f"sample video   : {p}")
    print(f"open the UI    : {ui_command(summary['tracking_uri'])}")
    return summary
