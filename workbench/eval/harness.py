"""``workbench eval``'s job: generate a suite's videos with a model, score them, write results, log to MLflow.

Read top to bottom: the suite (workbench.eval.suite) -> the metric networks and the cached real-video
statistics (workbench.eval.reference; every input is checked there, before anything is generated) ->
generation (workbench.eval.generation: a stock ``CogVideoXPipeline``, fixed seeds, mp4 files) -> scoring
(workbench.eval.scoring: frame-averaged CLIP score per video, FVD of the set) -> results
(workbench.eval.results: ``results.json``, ``results.md``, a first-frame grid) -> MLflow (the training
run's own run when a checkpoint or run id is evaluated, else a new run in experiment ``workbench-eval``).

``evaluate`` is the whole job for the CLI and notebooks; the ``SuiteEvaluation`` callback
(workbench.eval.callback) runs the same generation and scoring during training, at validation.

Video convention (as in ``workbench.metrics``): float tensors (B, F, C, H, W) in [0, 1].
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from workbench.eval.generation import generate_suite_videos
from workbench.eval.reference import load_suite_metrics
from workbench.eval.results import first_frame_grid, suite_results, tap_first_frames, write_results
from workbench.eval.scoring import SuiteScores, confidence_intervals, score_videos
from workbench.eval.sources import ModelSource, resolve_model
from workbench.eval.suite import EvalError, Suite, load_suite
from workbench.tracking.store import resolve_tracking_uri

EXPERIMENT = "workbench-eval"  # where evaluations of plain model directories go


def text_encoder_fingerprint(pipe) -> str:
    """What identifies a pipeline's text encoding: its tokenizer's vocabulary size, the encoder's config and a
    hash of its token-embedding weights (pipelines sharing these encode every prompt alike)."""
    import hashlib

    weights = pipe.text_encoder.get_input_embeddings().weight.detach().float().cpu().numpy()
    digest = hashlib.sha256(weights.tobytes()).hexdigest()
    return f"{len(pipe.tokenizer)}:{pipe.text_encoder.config.to_json_string()}:{digest}"


def mlflow_metric_name(suite_name: str, key: str) -> str:
    """``eval/fvd`` of suite ``S`` is logged as ``eval/S/fvd``: a run evaluated on several suites keeps each."""
    return f"eval/{suite_name}/{key.removeprefix('eval/')}"


def log_to_mlflow_run(uri: str, src: ModelSource, suite: Suite, out: Path, results: dict, step: int) -> str:
    """Attach metrics, params and the out folder (artifact path ``eval/<suite>/``) to the training
    run, or to a new run in experiment ``workbench-eval``. Returns the run id."""
    from mlflow import MlflowClient
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    prefix = f"eval/{suite.name}"
    params = {f"{prefix}/{k}": v for k, v in {**suite.settings(), **(results.get("provenance") or {})}.items()}
    comparable = (results.get("fvd_comparability") or {}).get("comparable")
    if src.run is not None:
        run_id, new = src.run.info.run_id, False
    else:
        exp = client.get_experiment_by_name(EXPERIMENT)
        exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
        name = f"{suite.name}-{Path(src.label).name or src.label}"
        tags = {"workbench.suite": suite.name, "workbench.model": src.label}
        run_id, new = client.create_run(exp_id, run_name=name, tags=tags).info.run_id, True
        params.update({"model": src.label, "lora": src.lora, "checkpoint": src.checkpoint,
                       "base_model": src.base_model})
    params = [Param(k, json.dumps(v) if isinstance(v, list) else str(v)) for k, v in params.items() if v is not None]
    try:
        client.log_batch(run_id, params=params)
    except MlflowException as e:
        # A run's params cannot change; an earlier evaluation with other settings logged them already.
        print(f"note: suite settings not logged as params of run {run_id} ({str(e).splitlines()[0][:200]}); "
              "they are in results.json", file=sys.stderr)
    for key, value in results["metrics"].items():
        client.log_metric(run_id, mlflow_metric_name(suite.name, key), value, step=step)
    client.set_tag(run_id, f"workbench.eval.{suite.name}.out", str(out.resolve()))
    client.set_tag(run_id, f"workbench.eval.{suite.name}.fvd_comparable", str(bool(comparable)).lower())
    client.log_artifacts(run_id, str(out), prefix)
    if new:
        client.set_terminated(run_id)
    return run_id




@dataclass
class EvalResult:
    suite: Suite
    out: Path
    scores: SuiteScores
    base_scores: SuiteScores | None
    results: dict
    run_id: str | None
    tracking_uri: str | None

    @property
    def metrics(self) -> dict[str, float]:
        return self.results["metrics"]


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvalError(f"--out {out}: exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)


def evaluate(suite: str | os.PathLike | Suite, model: str, *, lora: str | None = None, base_model: str | None = None,
             compare_base: bool = False, clip_model: str | None = None, fvd_detector: str | None = None,
             reference: str | None = None, out: str | os.PathLike | None = None,
             cache_dir: str | os.PathLike | None = None, tracking_uri: str | None = None,
             log_to_mlflow: bool = True, device: str | None = None, dtype: str | None = None,
             progress: bool = True, compile: bool = False, attention: str = "sdpa",
             approximate: str | None = None) -> EvalResult:
    """Evaluate ``model`` on ``suite``: generate, score, write results, log to MLflow.

    ``model``: a diffusers pipeline directory (or hub id; ``lora`` adds a diffusers LoRA on top), a
    ``workbench fit`` checkpoint or run directory, or an MLflow run id. ``compare_base`` also
    evaluates the base model (``base_model``, else the checkpoint's, else the LoRA's pipeline
    directory) with the same seeds. ``clip_model``/``fvd_detector``/``reference`` override the
    suite's. ``out`` (default ``eval-results/<suite>-<time>``) must be new or empty. All inputs are
    checked before anything is generated (EvalError). Defaults: CUDA if available, bf16 there and
    fp32 on CPU. ``compile`` compiles the transformer blocks (regional ``torch.compile``) before
    generating; ``attention`` picks the kernel (sdpa, flash4, auto: workbench.model.attention).
    ``approximate`` overrides the suite's approximate lever (workbench.model.caching), recorded in the results.
    """
    import torch

    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    suite = suite.with_overrides(clip_model=clip_model,
                                 fvd_detector=Path(fvd_detector).expanduser() if fvd_detector else None,
                                 reference=Path(reference).expanduser() if reference else None,
                                 approximate=approximate)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or ("bf16" if device.type == "cuda" else "fp32")
    uri = resolve_tracking_uri(tracking_uri)
    src = resolve_model(model, lora=lora, base_model=base_model, compare_base=compare_base, tracking_uri=uri)
    out = Path(out) if out is not None else Path("eval-results") / f"{suite.name}-{datetime.now():%Y%m%d-%H%M%S}"
    _prepare_out(out)
    try:
        metrics = load_suite_metrics(suite, cache_dir=cache_dir, device=device, fallback_dir=out.parent)
    except BaseException:
        if not any(out.iterdir()):
            out.rmdir()
        raise

    first_frames: dict[str, dict[int, torch.Tensor]] = {}
    runs = [("fine-tuned" if compare_base else "model", "videos", src.load)]
    if compare_base:
        runs.insert(0, ("base", "videos_base", src.load_base))
    all_scores = {}
    embeddings: dict = {}  # per text encoder: the base and a fine-tune share T5, so each prompt is encoded once
    for label, folder, load in runs:
        pipe = load(device, dtype, compile, attention)
        store = first_frames.setdefault(label, {})
        batches = generate_suite_videos(pipe, suite, out / folder, progress=progress, desc=f"{suite.name} ({label})",
                                        embeddings=embeddings.setdefault(text_encoder_fingerprint(pipe), {}))
        all_scores[label] = score_videos(metrics, tap_first_frames(batches, suite.seeds[0], store))
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    scores = all_scores["fine-tuned" if compare_base else "model"]
    base_scores = all_scores.get("base")

    if suite.path is not None:
        shutil.copyfile(suite.path, out / "suite.yaml")
    first_frame_grid({k: [v[i] for i in range(len(suite.prompts))] for k, v in first_frames.items()},
                     out / "grid.png")
    info = {"model": src.label, "lora": str(src.lora) if src.lora else None,
            "checkpoint": str(src.checkpoint) if src.checkpoint else None, "global_step": src.global_step,
            "base_model": src.base_model if compare_base or src.checkpoint else None,
            "run_id": src.run.info.run_id if src.run is not None else None,
            "reference_statistics": str(metrics.cache_path), "provenance": metrics.provenance}
    intervals = confidence_intervals(scores, base_scores, confidence=suite.confidence,
                                     num_resamples=suite.bootstrap_resamples, seed=suite.bootstrap_seed)
    results = suite_results(suite, scores, base_scores, out=out, info=info, intervals=intervals)
    write_results(out, results)
    run_id = None
    if log_to_mlflow:
        run_id = log_to_mlflow_run(uri, src, suite, out, results, step=src.global_step or 0)
        if results["run_id"] != run_id:
            results["run_id"] = run_id
            write_results(out, results)
    return EvalResult(suite, out, scores, base_scores, results, run_id, uri if log_to_mlflow else None)
