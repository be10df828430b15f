"""LightningDataModule over a folder of captioned videos.

Frames: ``num_frames`` (4k+1) frames at ``fps``, from the centre of each clip
(workbench.data.video.frame_indices_at_fps; ``fps: null`` takes consecutive frames).

Resize + crop: each clip is scaled, aspect ratio kept (bilinear, antialiased), until it covers its
target size, then centre-cropped to it. Without buckets the target is ``height`` x ``width`` for
every clip, so a clip of another aspect ratio loses its edges. With ``buckets`` (a list of
[height, width]) each clip's target is the bucket whose aspect ratio is closest to its own
(closest in log(width / height); the clip's size is probed once in setup), so it is cropped as
little as the buckets allow; every batch holds clips of one bucket (BucketBatchSampler: shuffled
within buckets and across batches by ``bucket_seed`` + epoch; training drops each bucket's
incomplete last batch).

Bad samples (``on_bad_sample``):

* ``error`` (default): the first sample that cannot be loaded stops training with a SampleError
  naming the file and the reason. (With ``buckets``, setup probes every clip and stops on all the
  unusable ones at once.)
* ``skip``: setup validates every entry once (the checks of ``workbench data check`` that make a
  sample unusable: missing, zero-length, not a video, corrupt, too short, no caption, outside the
  dataset root; see workbench.data.validate.UNUSABLE), drops those and writes them with their reasons
  to ``skipped_samples.json`` (``skipped_report_path()``; ``skipped`` has the same records). A clip
  that still fails to decode during training is replaced by the next loadable clip of the same
  size and added to the file; nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from workbench.common import atomic_write_text
from workbench.data.batching import BucketBatchSampler, GlobalBatchSampler, ResumableDataLoader
from workbench.data.dataset import ON_BAD_SAMPLE, SampleError, VideoCaptionDataset, collate
from workbench.data.manifest import Entry, find_manifest, read_manifest, refuse_paths_outside_root
from workbench.model.families import ModelFamily, family_class, family_of_model

SKIPPED_FILE = "skipped_samples.json"


class VideoDataModule(L.LightningDataModule):
    """Videos + captions from ``root`` (metadata.jsonl/.csv or prompts.txt + videos.txt).

    Validation uses ``val_root`` when given; else, with ``val_split`` N > 0, the last N manifest entries,
    held out of training (from videos or the cache alike); else the first ``val_samples`` training entries:
    a fixed set whose loss (with fixed noise and timesteps) tracks how well the data is fit. Only held-out
    samples (``val_root``, ``val_split``) tell over-fitting apart from fitting.

    Args:
        model: the model the data is for (linked from ``model.model`` by ``workbench fit``; hub id or diffusers
            directory): its family (workbench.model.families) gives the clip rules and the defaults below.
        family: linked from ``model.family`` (``auto``: read from the model).
        num_frames, height, width, fps: the clip; None (``fps``: ``auto``), the default, takes the family's native
            clip (49 frames at 8 fps, 480x720 for CogVideoX-2B and 5B; 81 at 16 fps, 768x1360 for CogVideoX1.5-5B);
            ``fps: null`` takes consecutive source frames at each clip's own rate. A clip the family cannot take
            (50 frames; 770 px) is a one-line error with the fix.
        on_bad_sample: ``error`` (stop on a bad sample) or ``skip`` (drop and report it); see the module doc.
        buckets: aspect-ratio buckets as [[height, width], ...]; None trains everything at height x width.
            Combines with ``cache``: each clip is encoded at its bucket, the cache records it, batches hold one
            bucket each, as from raw videos (and resume exactly mid-epoch, on the same number of processes).
        bucket_seed: seed of the data order (combined with the epoch), with or without buckets.
        report_dir: where ``skipped_samples.json`` goes; default the run directory (``<default_root_dir>/<run id>``).
        cache: a ``workbench prepare`` cache directory to train from instead of decoding videos (pair it
            with ``model.encoders: offload``). It is checked against the run's model and data settings
            and refused when it was made for others. ``auto`` uses ``<root>/.workbench-cache/<model>-<F>x<H>x<W>-<fps>fps``
            and encodes whatever is missing before training starts (Lightning's prepare_data, so on
            one process per node; with several GPUs run ``torchrun ... workbench.cli prepare`` first).
    """

    def __init__(self, root: str = "datasets/sample", model: str | None = None, family: str = "auto",
                 num_frames: int | None = None, height: int | None = None, width: int | None = None,
                 fps: float | Literal["auto"] | None = "auto", batch_size: int = 1, num_workers: int = 2,
                 val_root: str | None = None, val_samples: int = 4, on_bad_sample: Literal["error", "skip"] = "error",
                 buckets: list[tuple[int, int]] | None = None, bucket_seed: int = 0, report_dir: str | None = None,
                 cache: str | None = None, val_split: int = 0):
        super().__init__()
        if val_split < 0 or (val_split and val_root is not None):
            raise ValueError(f"val_split={val_split}: give a number of held-out entries >= 0, and not together "
                             "with data.val_root")
        if cache is not None and val_root is not None:
            raise ValueError("data.cache trains and validates from one `workbench prepare` cache: drop data.val_root "
                             "(hold samples out with data.val_split, or validation uses the first val_samples)")
        if model is not None:
            from workbench.model.loading import absolute_if_local

            model = absolute_if_local(model)  # as the module records it (Lightning merges both hparams)
        fam = data_family(model, family)
        num_frames, height, width, fps = dataclasses.astuple(fam.clip(num_frames, height, width, fps))
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise ValueError(f"on_bad_sample={on_bad_sample!r}: choose one of {', '.join(ON_BAD_SAMPLE)}")
        if buckets is not None:
            if not buckets:
                raise ValueError("buckets=[]: give at least one [height, width], or null for a single size")
        fam.check_data(num_frames, height, width, buckets)
        find_manifest(Path(root))  # fail before a run is created, not after
        root = str(Path(root).resolve())  # recorded absolute, so exports find the dataset card from anywhere
        self.save_hyperparameters()
        self.family = fam
        self.skipped: list[dict] = []
        self._checked: dict[str, tuple[list[Entry], list[tuple[int, int]] | None]] = {}
        self._skipped_path: Path | None = None

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if hp.cache:
            self._setup_cache()
            return
        entries, sizes = self._usable(hp.root, read_manifest(hp.root))
        if hp.val_split:
            held_out, entries = self._split(entries), entries[:-hp.val_split]
            held_sizes, sizes = (sizes[-hp.val_split:], sizes[:-hp.val_split]) if sizes else (None, None)
            self.val_set = self._dataset(hp.root, held_out, held_sizes)
        elif hp.val_root:
            val_entries, val_sizes = self._usable(hp.val_root, read_manifest(hp.val_root))
            self.val_set = self._dataset(hp.val_root, val_entries, val_sizes)
        else:
            self.val_set = self._dataset(hp.root, entries[: hp.val_samples], sizes[: hp.val_samples] if sizes else None)
        self.train_set = self._dataset(hp.root, entries, sizes)
        if hp.on_bad_sample == "skip":
            self._write_skipped()

    def _cache_dir(self) -> Path:
        hp = self.hparams
        if hp.cache != "auto":
            return Path(hp.cache)
        from workbench.data.cache import auto_cache_dir

        return auto_cache_dir(hp.root, self._model(), hp.num_frames, hp.height,
                              hp.width, hp.fps, hp.buckets)

    def prepare_data(self) -> None:
        """With ``cache: auto``, encode what the cache lacks (VAE + T5 loaded here, freed after)."""
        hp = self.hparams
        if hp.cache != "auto":
            return
        from workbench.data.cache import read_index, stale_entries
        from workbench.data.prepare import prepare_cache

        cache = self._cache_dir()
        if ((cache / "index.json").is_file() and read_index(cache).get("complete")
                and not stale_entries(read_index(cache), read_manifest(hp.root))):  # a changed range: re-encode it
            return
        module = self.trainer.lightning_module
        device = "cuda" if self.trainer.strategy.root_device.type == "cuda" else "cpu"
        prepare_cache(self._model(), hp.root, cache, hp.num_frames, hp.height, hp.width, hp.fps,
                      device=device, dtype=module.hparams.frozen_dtype, vae_tiling=module.speed.vae_tiling,
                      buckets=hp.buckets, family=self.family)
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _setup_cache(self) -> None:
        """Train and validate from the cache; the key must match this run's model and data settings."""
        from workbench.data.cache import CachedLatentDataset, cache_key, check_images, check_ranges, read_index

        hp = self.hparams
        model = self._model()
        expected = (cache_key(model, hp.num_frames, hp.height, hp.width, hp.fps, hp.buckets, family=self.family)
                    if model else None)
        cache = self._cache_dir()
        index = read_index(cache)
        manifest = read_manifest(hp.root)
        check_images(cache, index, manifest)
        check_ranges(cache, index, manifest)
        entries = None
        if hp.on_bad_sample == "skip" and not index.get("complete"):
            entries = index.get("entries", [])
            present = {e.get("key", e["file_name"]) for e in entries}
            failed = index.get("failed", {})
            for e in manifest:
                if e.key not in present:
                    self.skipped.append({"root": str(hp.root), "file": e.key, "where": e.where, "stage": "prepare",
                                         "reason": failed.get(e.key, "not in the cache"), "code": "not_cached"})
            index["complete"] = True  # the policy accepts the missing ones; they are reported
        entries = entries if entries is not None else index.get("entries", [])
        if hp.val_split:
            held_out, entries = self._split(entries), entries[:-hp.val_split]
        self.train_set = CachedLatentDataset(cache, expected, entries=entries, index=index)
        self.val_set = CachedLatentDataset(cache, expected, index=index,
                                           entries=held_out if hp.val_split else entries[: hp.val_samples])
        if hp.on_bad_sample == "skip":
            self._write_skipped()

    def _model(self) -> str | None:
        """The model the data is for: ``data.model`` (linked from ``model.model``), else the module's."""
        if self.hparams.model is not None:
            return self.hparams.model
        trainer = self._trainer_or_none()
        return trainer.lightning_module.hparams.model if trainer is not None else None

    def _split(self, entries: list) -> list:
        """The last ``val_split`` entries (held out of training), after a check that some remain to train on."""
        n = self.hparams.val_split
        if n >= len(entries):
            raise SampleError(f"data.val_split={n} holds out every one of the {len(entries)} usable samples of "
                              f"{self.hparams.root}: lower it")
        return entries[-n:]

    def _dataset(self, root: str, entries: list[Entry], sizes) -> VideoCaptionDataset:
        hp = self.hparams
        return VideoCaptionDataset(root, entries, hp.num_frames, hp.height, hp.width, hp.fps, sizes=sizes,
                                   on_bad_sample=hp.on_bad_sample)

    def _usable(self, root: str, entries: list[Entry]) -> tuple[list[Entry], list[tuple[int, int]] | None]:
        """The entries to train on and their bucket sizes; probes the clips once when skip or buckets need it."""
        hp = self.hparams
        if hp.on_bad_sample == "error" and hp.buckets is None:
            refuse_paths_outside_root(entries, root, "training data")  # skip: validate_entries drops them
            return entries, None
        if root in self._checked:
            return self._checked[root]
        from workbench.data.validate import nearest_bucket, validate_entries

        results = validate_entries(root, entries, hp.num_frames, hp.fps, decode=hp.on_bad_sample == "skip",
                                   progress=self._is_global_zero())
        bad = [r for r in results if not r.usable]
        if bad and hp.on_bad_sample == "error":
            listed = "\n  ".join(r.reason for r in bad[:20]) + ("\n  ..." if len(bad) > 20 else "")
            raise SampleError(f"{len(bad)} unusable samples in {root}:\n  {listed}\nFix or remove them (`workbench "
                              "data check` reports them all) or set data.on_bad_sample: skip")
        for r in bad:
            self.skipped.append({"root": str(root), "file": r.entry.key, "where": r.entry.where,
                                 "reason": r.reason, "code": r.code, "stage": "setup"})
        good = [r for r in results if r.usable]
        if not good:
            raise SampleError(f"{root}: none of the {len(results)} samples is usable; see {SKIPPED_FILE} or run "
                              f"`workbench data check {root}`")
        if bad:
            rank_zero_warn(f"{root}: skipping {len(bad)} of {len(results)} samples (on_bad_sample: skip), e.g. "
                           f"{bad[0].reason}")
        sizes = None
        if hp.buckets is not None:
            buckets = [tuple(b) for b in hp.buckets]
            sizes = [buckets[nearest_bucket(r.height, r.width, buckets)] for r in good]
        self._checked[root] = ([r.entry for r in good], sizes)
        return self._checked[root]

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        """Seeded batches split over processes (global batches, or batches within buckets when the samples
        have several sizes); the training loader resumes mid-epoch (ResumableDataLoader)."""
        workers = self.hparams.num_workers
        trainer = self._trainer_or_none()
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        if world > 1 and getattr(getattr(trainer, "_accelerator_connector", None), "use_distributed_sampler", False):
            raise ValueError("several processes: set trainer.use_distributed_sampler: false (the workbench "
                             "splits each global batch over the processes itself)")
        if dataset.sizes is None:
            sampler = GlobalBatchSampler(len(dataset), self.hparams.batch_size, world, rank, shuffle=shuffle,
                                         seed=self.hparams.bucket_seed, drop_last=shuffle)
        else:
            buckets = [tuple(b) for b in self.hparams.buckets]
            sampler = BucketBatchSampler(buckets=[buckets.index(tuple(s)) for s in dataset.sizes],
                                         batch_size=self.hparams.batch_size, shuffle=shuffle, drop_last=shuffle,
                                         seed=self.hparams.bucket_seed, num_replicas=world, rank=rank)
        fn = dataset.collate if self.hparams.cache else collate
        common = dict(batch_sampler=sampler, num_workers=workers, collate_fn=fn, persistent_workers=workers > 0)
        if shuffle and trainer is not None:
            progress = lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed  # noqa: E731
            return ResumableDataLoader(dataset, progress=progress, **common)
        return DataLoader(dataset, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Record the samples the dataset replaced while loading this batch (``skip`` only)."""
        if isinstance(batch, dict) and "skipped" in batch:
            known = {(s["root"], s["file"], s["where"]) for s in self.skipped}
            new = 0
            for s in (s for per_sample in batch.pop("skipped") for s in per_sample):
                key = (s["root"], s["file"], s["where"])
                if key not in known:  # a bad clip is met again each epoch; list it once
                    known.add(key)
                    self.skipped.append({**s, "code": "load_failed"})
                    rank_zero_warn(f"replaced a sample that failed to load: {s['reason']}")
                    new += 1
            if new:
                self._write_skipped()
        return batch

    # -- the skipped-samples report ------------------------------------------------------------
    def skipped_report_path(self) -> Path | None:
        """Where ``skipped_samples.json`` was written (None under ``on_bad_sample: error`` or before setup)."""
        return self._skipped_path

    def _write_skipped(self) -> None:
        if not self._is_global_zero():
            return
        if self._skipped_path is None:
            if self.hparams.report_dir:
                directory = Path(self.hparams.report_dir)
            elif self._trainer_or_none() is not None:
                from workbench.tracking.runs import run_dir

                directory = run_dir(self.trainer)
            else:
                directory = Path(".")
            directory.mkdir(parents=True, exist_ok=True)
            self._skipped_path = directory / SKIPPED_FILE
        atomic_write_text(self._skipped_path, json.dumps(self.skipped, indent=2) + "\n",
                          what="the skipped-samples report")
        trainer = self._trainer_or_none()
        if trainer is not None and self.skipped:
            from workbench.tracking.runs import mlflow_logger

            logger = mlflow_logger(trainer)
            if logger is not None:
                logger.log_artifact(self._skipped_path, "data")
                logger.log_metrics({"data/skipped_samples": float(len(self.skipped))}, step=trainer.global_step)

    def _trainer_or_none(self):
        return getattr(self, "trainer", None)

    def _is_global_zero(self) -> bool:
        trainer = self._trainer_or_none()
        return trainer is None or trainer.is_global_zero



def data_family(model: str | None, family: str = "auto") -> ModelFamily:
    """The family whose clip rules and native clip the data follows: ``model``'s (read from its configs),
    the named one, or CogVideoX-2B's when neither is given (the datamodule built without a model)."""
    if model is not None:
        from workbench.common import is_hub_id
        from workbench.model.families import family_of_hub_id
        from workbench.model.loading import ModelNotFound, check_model_source

        try:
            check_model_source(model)
        except ModelNotFound:
            # a released model's hub id, offline and not cached: its family is known by name (data check and
            # recipe checks work offline; loading the weights will say what is missing)
            known = family_of_hub_id(model) if is_hub_id(model) else None
            if known is None:
                raise
            return known
        return family_of_model(model, name=family)
    cls = family_class("cogvideox-2b" if family in (None, "auto") else family)
    return cls({"max_text_seq_length": cls.released_text_len})
