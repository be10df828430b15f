"""Checkpoints that are whole whatever kills the process, read without unpickling, and never miss the end.

* ``AtomicCheckpointIO`` (a Lightning checkpoint IO plugin; the recipes set it in ``trainer.plugins``): a
  checkpoint file is either the old complete one or the new complete one, whatever kills the process
  mid-write; a full disk (ENOSPC, EDQUOT) ends the run with one line naming the file and the space it
  needed (``DiskFull``), the previous checkpoint intact; and checkpoints are read with
  ``torch.load(weights_only=True)``.
* ``RunCheckpoint`` (the recipes' checkpoint callback): Lightning's ``ModelCheckpoint`` that also saves the
  run's final step, so ``last.ckpt`` (what ``export RUN`` and ``eval RUN`` use) is the trained model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from workbench.common import DiskFull, disk_full_error, is_disk_full
from workbench.model.checkpoint import load_checkpoint_safely


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor in ``obj`` (nested dicts, lists, tuples), each storage counted once: about what
    ``torch.save`` writes for a checkpoint, which is mostly tensors."""
    seen: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            try:
                storage = item.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
            except (RuntimeError, NotImplementedError):  # tensors without a storage (meta, some subclasses)
                key, size = id(item), item.nelement() * item.element_size()
            if key not in seen or key == 0:
                seen.add(key)
                total += size
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


class _WriteRecorder:
    """A file object that remembers the OSError its ``write`` raised: ``torch.save`` reports a failed write as a
    RuntimeError of its own, which need not carry the OSError (and its errno) along."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self._f.flush()


def atomic_torch_save(obj: Any, path: str | os.PathLike, what: str = "checkpoint") -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, then rename it over ``path``.

    A reader (or a resume after a kill) sees the previous file or the complete new one, never a partial
    file under the final name. Leftovers of a write that was killed are removed by the next write. A full
    disk (or quota) raises ``DiskFull`` naming ``path`` and the bytes the checkpoint's tensors need, after the
    temporary file is removed: the previous file under ``path`` is untouched.
    """
    path = Path(path)
    directory = path.parent
    recorder = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path, tensor_bytes(obj), what) from e
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            recorder = _WriteRecorder(f)
            torch.save(obj, recorder)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)  # first: the space it held counts as free in the message
        if isinstance(e, Exception) and (is_disk_full(e) or (recorder is not None and recorder.error is not None
                                                             and is_disk_full(recorder.error))):
            raise disk_full_error(path, tensor_bytes(obj), what) from e
        raise
    _fsync_directory(directory)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes atomically in the checkpoint's own directory and reads safely.

    Lightning's own ``TorchCheckpointIO`` stages the file in the system temp directory and moves it into
    place, which is a copy (not atomic) across filesystems, and does not fsync. ``last.ckpt`` goes through
    here too (``ModelCheckpoint(save_last=True)`` saves it as a checkpoint of its own). A full disk raises
    ``DiskFull`` (a UserError): Lightning marks the MLflow run FAILED and `workbench fit` prints its one line
    and exits with status 2.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        if "://" in str(path):  # remote storage: fsspec's own transaction
            return super().save_checkpoint(checkpoint, path)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        """Always ``weights_only=True`` (also when Lightning passes None or False; remote files included)."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_checkpoint_safely(path, map_location=map_location)


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that checkpoints the final step of every run, and stops every process on a full disk.

    Lightning's saves every ``every_n_train_steps`` and, at the end, ``last.ckpt`` only if no "last" was
    written before: a run of 40 steps checkpointed every 16 keeps step 32 as ``last.ckpt`` and loses its
    last 8 steps. Here the end of training saves the final step (a step-named file under ``save_top_k``
    as the interval saves do, and ``last.ckpt``), unless that step is saved already.

    With several processes only rank 0 writes (DDP) and the others wait for it at a barrier: a ``DiskFull`` there
    would leave them waiting until the collective timeout. Here the failing process meets them at that barrier
    and every process learns of the failure (one boolean all-reduce per save), so all of them stop with the
    one-line error.
    """

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        if trainer.world_size == 1:
            return super()._save_checkpoint(trainer, filepath)
        error = None
        try:
            super()._save_checkpoint(trainer, filepath)
        except DiskFull as e:
            error = e
            trainer.strategy.barrier("Trainer.save_checkpoint")  # where the other processes wait for this one
        if trainer.strategy.reduce_boolean_decision(error is not None, all=False):
            raise error if error is not None else disk_full_error(filepath, None, "checkpoint on another process")

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step > self._last_global_step_saved and not trainer.sanity_checking:
            candidates = self._monitor_candidates(trainer)
            if self.monitor is None or self.monitor in candidates:
                self._save_topk_checkpoint(trainer, candidates)
            if self.save_last:
                self._save_last_checkpoint(trainer, candidates)
            return
        super().on_train_end(trainer, pl_module)

