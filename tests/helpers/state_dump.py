"""A test-only callback that saves every parameter of the module at fit start and fit end.

Added to a CLI run with ``--trainer.callbacks+=tests.helpers.state_dump.StateDump`` so a test can
see from outside the process which weights training changed (VAE, T5, base transformer, LoRA).
"""

import os
from pathlib import Path

import lightning as L
from safetensors.torch import save_file


class StateDump(L.Callback):
    def __init__(self, out_dir: str | None = None):
        self.out = Path(out_dir or os.environ["WORKBENCH_TEST_STATE_DUMP"])

    def _dump(self, pl_module, name: str) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().cpu().contiguous() for k, v in pl_module.named_parameters()}
        save_file(state, str(self.out / f"{name}.safetensors"))

    def on_fit_start(self, trainer, pl_module) -> None:
        self._dump(pl_module, "start")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._dump(pl_module, "end")
