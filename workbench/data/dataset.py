"""A torch Dataset of (video, caption) pairs read from a dataset folder."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from workbench.common import ImageUnreadable, UserError, open_rgb_image
from workbench.data.manifest import Entry
from workbench.data.video import VideoError, load_clip, resize_crop


class SampleError(UserError, ValueError):
    """A dataset sample that cannot be used; the message names the file and the reason."""


ON_BAD_SAMPLE = ("error", "skip")


class VideoCaptionDataset(Dataset):
    """Decodes each clip to (C, F, H, W) in [-1, 1] for the VAE, with its caption.

    ``sizes`` gives each entry its own (height, width) (its aspect-ratio bucket); default: all
    ``height`` x ``width``. ``on_bad_sample="error"`` raises SampleError for a sample that cannot be
    loaded; ``"skip"`` loads the next entry of the same size instead (deterministically: the
    following indices, wrapping around) and lists what it skipped under the sample's ``skipped`` key.
    """

    def __init__(self, root: str | Path, entries: list[Entry], num_frames: int, height: int, width: int,
                 fps: float | None, sizes: list[tuple[int, int]] | None = None, on_bad_sample: str = "error"):
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise ValueError(f"on_bad_sample={on_bad_sample!r}: choose one of {', '.join(ON_BAD_SAMPLE)}")
        if sizes is not None and len(sizes) != len(entries):
            raise ValueError(f"{len(sizes)} sizes for {len(entries)} entries")
        self.root = Path(root)
        self.entries = entries
        self.num_frames, self.height, self.width, self.fps = num_frames, height, width, fps
        self.sizes = sizes
        self.on_bad_sample = on_bad_sample
        self._bad: dict[int, str] = {}  # index -> reason, per process (each loader worker learns its own)

    def __len__(self) -> int:
        return len(self.entries)

    def size(self, index: int) -> tuple[int, int]:
        return self.sizes[index] if self.sizes is not None else (self.height, self.width)

    def load(self, index: int) -> dict:
        """Sample ``index`` or SampleError naming the file and the reason."""
        entry = self.entries[index]
        if entry.caption is None:
            raise SampleError(f"{entry.key} ({entry.where}): missing caption")
        height, width = self.size(index)
        try:
            video = load_clip(entry.path(self.root), self.num_frames, height, width, self.fps, entry.start, entry.end)
        except VideoError as e:
            raise SampleError(f"{entry.key} ({entry.where}): {e}") from e
        sample = {"video": video, "caption": entry.caption, "id": entry.key}
        if entry.image is not None:
            sample["image"] = load_image(entry, self.root, height, width)
        return sample

    def __getitem__(self, index: int) -> dict:
        if self.on_bad_sample == "error":
            return self.load(index)
        skipped = []
        for candidate in self._substitutes(index):
            if candidate in self._bad:
                reason = self._bad[candidate]
            else:
                try:
                    sample = self.load(candidate)
                except Exception as e:  # under `skip` nothing a sample does may stop the run
                    reason = self._bad[candidate] = str(e) if isinstance(e, SampleError) else (
                        f"{self.entries[candidate].key} ({self.entries[candidate].where}): "
                        f"{type(e).__name__}: {e}")
                    warnings.warn(f"skipped bad sample {reason}", stacklevel=2)
                else:
                    sample["skipped"] = skipped
                    return sample
            entry = self.entries[candidate]
            skipped.append({"root": str(self.root), "file": entry.key, "where": entry.where, "reason": reason,
                            "stage": "load"})
        raise SampleError(f"no loadable sample left of size {self.size(index)}: every one failed "
                          f"({len(skipped)} tried; first: {skipped[0]['reason']})")

    def _substitutes(self, index: int):
        """``index``, then the following indices of the same size, wrapping around."""
        n, size = len(self.entries), self.size(index)
        for k in range(n):
            j = (index + k) % n
            if self.sizes is None or self.sizes[j] == size:
                yield j


def load_image(entry: Entry, root: Path, height: int, width: int) -> torch.Tensor:
    """An entry's conditioning image as (C, H, W) in [-1, 1], resized and centre-cropped to the clip's size as
    its video is (``resize_crop``); SampleError naming the entry for a missing or undecodable file."""
    import numpy as np

    try:
        pixels = np.asarray(open_rgb_image(entry.image_path(root)))
    except FileNotFoundError:
        raise SampleError(f"{entry.key} ({entry.where}): image {entry.image}: no such file") from None
    except ImageUnreadable as e:
        raise SampleError(f"{entry.key} ({entry.where}): image {entry.image}: not a readable image ({e})") from None
    frame = torch.from_numpy(pixels.copy()).permute(2, 0, 1).unsqueeze(0).float()  # (1, C, h, w), as load_clip's
    return (resize_crop(frame, height, width)[0] / 127.5 - 1.0).contiguous()


def collate(samples: list[dict]) -> dict:
    """Stack tensors, keep strings as lists."""
    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
