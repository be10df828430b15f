"""Test-only faults for CLI runs (added to a recipe's callbacks by the reliability tests).

* ``NaNAtStep``: the batch trained at one global step becomes NaN (as a corrupt sample would), so its
  loss and gradients are not finite.
* ``SlowSteps``: each training step takes at least ``seconds``, so a test can kill a run between steps.
* ``Pickled``: an object that is not plain data; unpickling it creates ``marker`` (it must never happen).
"""

import time
from pathlib import Path

import lightning as L
import torch


class NaNAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            for key in ("video", "latent_dist"):
                if isinstance(batch.get(key), torch.Tensor):
                    batch[key].fill_(float("nan"))


class SlowSteps(L.Callback):
    def __init__(self, seconds: float = 0.2):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


class Pickled:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))
