"""LightningDataModule over a folder of captioned videos."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from workbench.data.dataset import VideoCaptionDataset, collate
from workbench.data.manifest import find_manifest, read_manifest
from workbench.data.video import check_frame_count, check_resolution


class VideoDataModule(L.LightningDataModule):
    """Videos + captions from ``root`` (metadata.jsonl/.csv or prompts.txt + videos.txt).

    Validation uses ``val_root`` when given, else the first ``val_samples`` training entries: a
    fixed batch whose loss (with fixed noise and timesteps) tracks how well the data is fit.
    """

    def __init__(self, root: str = "datasets/sample", num_frames: int = 49, height: int = 480, width: int = 720,
                 fps: float | None = 8.0, batch_size: int = 1, num_workers: int = 2, val_root: str | None = None,
                 val_samples: int = 4):
        super().__init__()
        check_frame_count(num_frames)
        check_resolution(height, width)
        find_manifest(Path(root))  # fail before a run is created, not after
        self.save_hyperparameters()

    def setup(self, stage: str) -> None:
        hp = self.hparams
        entries = read_manifest(hp.root)
        self.train_set = VideoCaptionDataset(hp.root, entries, hp.num_frames, hp.height, hp.width, hp.fps)
        if hp.val_root:
            val_entries, val_root = read_manifest(hp.val_root), hp.val_root
        else:
            val_entries, val_root = entries[: hp.val_samples], hp.root
        self.val_set = VideoCaptionDataset(val_root, val_entries, hp.num_frames, hp.height, hp.width, hp.fps)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle, num_workers=workers,
                          collate_fn=collate, persistent_workers=workers > 0, drop_last=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    @property
    def root(self) -> Path:
        return Path(self.hparams.root)
