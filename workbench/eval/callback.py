"""``SuiteEvaluation``: evaluate a suite during training, at validation, with the live model.

Add it to a recipe's callbacks (``workbench.eval.callback.SuiteEvaluation``) or on the command line
(``--trainer.callbacks+=workbench.eval.callback.SuiteEvaluation --trainer.callbacks.suite S.yaml``).
The module it evaluates must offer ``sampling_pipeline()`` (a context manager yielding a stock
``CogVideoXPipeline`` over the live transformer), as ``CogVideoXModule`` does.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from workbench.eval.generation import generate_suite_videos
from workbench.eval.reference import SuiteMetrics, load_suite_metrics
from workbench.eval.results import suite_results, write_results
from workbench.eval.scoring import score_videos
from workbench.eval.suite import load_suite
from workbench.tracking.runs import mlflow_logger, run_dir


class SuiteEvaluation(L.Callback):
    """Evaluate a (small) suite at validation: the module's live pipeline, the same generation and
    scoring as ``workbench eval``; logs ``eval/<suite>/clip_score`` and ``eval/<suite>/fvd`` to the loggers at
    ``trainer.global_step`` (the step a checkpoint saved then records, so ``workbench eval`` of that
    checkpoint lands on the same step) and puts them in ``trainer.callback_metrics`` (monitorable).

    With several processes (DDP) each generates its share of the suite's videos and the metric
    states are reduced across them (torchmetrics' sync), so the numbers are those of one process;
    rank zero writes and logs the results. Not for strategies that shard the transformer. Inputs are checked and the reference statistics prepared in ``setup``, before
    training starts. Videos and results.json go to ``<run dir>/eval/<suite>/step_<N>/`` and the
    MLflow run's artifacts under the same path.

    Args:
        suite: the suite YAML.
        every_n_validations: evaluate on every n-th validation (1 = every one).
        clip_model: overrides the suite's CLIP model.
        fvd_detector: overrides the suite's I3D detector.
        reference: overrides the suite's reference video folder.
        cache_dir: where reference statistics are cached (default: next to the suite).
    """

    def __init__(self, suite: str, every_n_validations: int = 1, clip_model: str | None = None,
                 fvd_detector: str | None = None, reference: str | None = None, cache_dir: str | None = None):
        if every_n_validations < 1:
            raise ValueError(f"every_n_validations={every_n_validations}: must be >= 1")
        self.suite_path, self.every = suite, every_n_validations
        self.overrides = {"clip_model": clip_model, "fvd_detector": fvd_detector, "reference": reference}
        self.cache_dir = cache_dir
        self.metrics: SuiteMetrics | None = None
        self._validations = 0

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if self.metrics is not None:
            return
        o = self.overrides
        suite = load_suite(self.suite_path).with_overrides(
            clip_model=o["clip_model"], fvd_detector=Path(o["fvd_detector"]) if o["fvd_detector"] else None,
            reference=Path(o["reference"]) if o["reference"] else None)
        # Rank zero computes and caches the reference statistics; the others then read the cache.
        fallback = trainer.strategy.broadcast(str(run_dir(trainer) / "eval") if trainer.is_global_zero else None)
        if trainer.is_global_zero:
            self.metrics = load_suite_metrics(suite, cache_dir=self.cache_dir, device="cpu",
                                              fallback_dir=Path(fallback))
        trainer.strategy.barrier("SuiteEvaluation.setup")
        if not trainer.is_global_zero:
            self.metrics = load_suite_metrics(suite, cache_dir=self.cache_dir, device="cpu",
                                              fallback_dir=Path(fallback))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        if (self._validations - 1) % self.every:
            return
        self._evaluate(trainer, pl_module)
        trainer.strategy.barrier("SuiteEvaluation")

    def _evaluate(self, trainer: L.Trainer, pl_module) -> None:
        suite, metrics = self.metrics.suite, self.metrics
        metrics.to(pl_module.device)
        step = f"step_{trainer.global_step:06d}"
        # rank zero's run directory, for every process's videos
        out = Path(trainer.strategy.broadcast(str(run_dir(trainer) / "eval" / suite.name / step)
                                              if trainer.is_global_zero else None))
        # The live transformer in eval mode (restored after), with the VAE and T5 loaded if offloaded.
        with pl_module.sampling_pipeline() as pipe:
            batches = generate_suite_videos(pipe, suite, out / "videos",
                                            context=trainer.precision_plugin.forward_context, progress=False,
                                            rank=trainer.global_rank, world_size=trainer.world_size)
            scores = score_videos(metrics, batches)
        if not trainer.is_global_zero:
            return
        results = suite_results(suite, scores, out=out, info={"global_step": trainer.global_step})
        write_results(out, results)
        values = {f"eval/{suite.name}/clip_score": scores.clip_score, f"eval/{suite.name}/fvd": scores.fvd,
                  **{f"eval/{suite.name}/{k}": v for k, v in (scores.means or {}).items()}}
        # Straight to the loggers: self.log at validation end would record global_step - 1.
        for lg in trainer.loggers:
            lg.log_metrics(values, step=trainer.global_step)
        # Also where ModelCheckpoint(monitor="eval/<suite>/fvd") and EarlyStopping look.
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in values.items()})
        logger = mlflow_logger(trainer)
        if logger is not None:
            logger.log_artifact(out, f"eval/{suite.name}/{step}")  # through the outage-buffering logger
