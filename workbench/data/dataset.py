"""A torch Dataset of (video, caption) pairs read from a dataset folder."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from workbench.data.manifest import Entry
from workbench.data.video import VideoError, load_clip


class SampleError(ValueError):
    """A dataset sample that cannot be used; the message names the file and the reason."""


class VideoCaptionDataset(Dataset):
    """Decodes each clip to (C, F, H, W) in [-1, 1] for the VAE, with its caption."""

    def __init__(self, root: str | Path, entries: list[Entry], num_frames: int, height: int, width: int,
                 fps: float | None):
        self.root = Path(root)
        self.entries = entries
        self.num_frames, self.height, self.width, self.fps = num_frames, height, width, fps

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        if entry.caption is None:
            raise SampleError(f"{entry.file_name} ({entry.where}): missing caption")
        try:
            video = load_clip(entry.path(self.root), self.num_frames, self.height, self.width, self.fps)
        except VideoError as e:
            raise SampleError(f"{entry.file_name} ({entry.where}): {e}") from e
        return {"video": video, "caption": entry.caption, "id": entry.file_name}


def collate(samples: list[dict]) -> dict:
    """Stack tensors, keep strings as lists."""
    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
