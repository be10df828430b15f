"""``NonFiniteGuard``: a step whose loss or gradients are not finite never updates the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn


class NonFiniteError(RuntimeError):
    """Training stopped on a non-finite loss or gradient (``NonFiniteGuard``)."""


class NonFiniteGuard(L.Callback):
    """Keep a non-finite loss or gradient out of the weights.

    Before each optimizer step the loss of every micro-batch since the last step and the norm of all
    gradients are checked (one device sync per step; with several processes the decision is shared).
    If one is NaN or infinite, the gradients are dropped so the optimizer leaves every weight and its own
    state as they were; the step counter and the learning-rate schedule still advance, as with AMP's
    GradScaler. Then, by ``policy``:

    * ``skip``: count it (metric ``train/skipped_steps``, the total so far, kept across resumes) and go on;
      after more than ``max_skipped_steps`` skips the run stops as with ``stop``.
    * ``stop``: raise NonFiniteError naming the step. No checkpoint holds non-finite weights: the last one
      written (named in the message) is the one to resume from.

    With fp16 mixed precision the GradScaler already skips steps whose scaled gradients overflow (and
    lowers the scale); only the loss is checked then.
    """

    def __init__(self, policy: Literal["skip", "stop"] = "skip", max_skipped_steps: int | None = 10):
        if policy not in ("skip", "stop"):
            raise ValueError(f"policy={policy!r}: choose 'skip' or 'stop'")
        if max_skipped_steps is not None and max_skipped_steps < 0:
            raise ValueError(f"max_skipped_steps={max_skipped_steps}: must be >= 0 (or null for no limit)")
        self.policy, self.max_skipped_steps = policy, max_skipped_steps
        self.skipped = 0
        self._loss_finite: torch.Tensor | None = None

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all()
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        loss_finite, self._loss_finite = self._loss_finite, None
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        grad_norm = None
        ok = torch.ones((), dtype=torch.bool, device=pl_module.device) if loss_finite is None else loss_finite
        if grads and scaler is None:
            grad_norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)
            ok = ok & torch.isfinite(grad_norm).to(ok.device)
        bad = trainer.strategy.reduce_boolean_decision(not bool(ok), all=False)
        if not bad:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        step = trainer.global_step
        what = "loss" if loss_finite is not None and not bool(loss_finite) else "gradient"
        detail = f"gradient norm {float(grad_norm)}" if grad_norm is not None else "gradients not checked (fp16)"
        where = f"global step {step} (epoch {trainer.current_epoch}, {what} not finite; {detail})"
        self.skipped += 1
        for logger in trainer.loggers:
            logger.log_metrics({"train/skipped_steps": float(self.skipped)}, step=step)
        too_many = self.max_skipped_steps is not None and self.skipped > self.max_skipped_steps
        if self.policy == "stop" or too_many:
            last = _last_checkpoint(trainer)
            why = ("policy: stop" if self.policy == "stop"
                   else f"{self.skipped} skipped steps, more than max_skipped_steps={self.max_skipped_steps}")
            resume = (f"The last good checkpoint is {last} (resume: --ckpt_path {last})" if last
                      else "No checkpoint was written before it")
            raise NonFiniteError(f"non-finite {what} at {where}: stopping ({why}); this step did not update the "
                                 f"weights. {resume}. If it recurs, check the data (`workbench data check`) and "
                                 "the learning rate.")
        rank_zero_warn(f"skipped the update at {where}; {self.skipped} skipped so far")

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


def _last_checkpoint(trainer) -> str | None:
    """The newest checkpoint file on disk (every checkpoint is written atomically, so it is complete)."""
    paths = []
    for cb in trainer.checkpoint_callbacks:
        for p in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")):
            if p and Path(p).is_file():
                paths.append(Path(p))
    return str(max(paths, key=lambda p: p.stat().st_mtime)) if paths else None
