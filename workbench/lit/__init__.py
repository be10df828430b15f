"""Lightning pieces: the fine-tuning module, the data module, callbacks."""

from workbench.lit.datamodule import VideoDataModule
from workbench.lit.module import CogVideoXModule

__all__ = ["CogVideoXModule", "VideoDataModule"]
