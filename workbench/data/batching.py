"""Batch samplers: seeded global batches (split over processes, resumable mid-epoch) and aspect-ratio buckets.

Global batches: each epoch's order is a permutation drawn from (seed, epoch). Global batch b holds
order[b*G:(b+1)*G] with G = batch_size x processes, and process r takes its r-th slice. So one
process with batch 2B sees, step for step, the same samples as two processes with batch B, and a
run resumed from a checkpoint in the middle of an epoch continues with exactly the batches it had
not trained on yet (Lightning restores loaders that have ``state_dict``/``load_state_dict``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.utils.data import DataLoader, Sampler


class GlobalBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` indices for process ``rank`` of ``num_replicas``.

    ``drop_last`` drops the last incomplete global batch (training); otherwise the last one is
    filled by wrapping around the order, as DistributedSampler pads, so every process gets the same
    number of batches.
    """

    def __init__(self, num_samples: int, batch_size: int, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = True):
        if num_samples < 1:
            raise ValueError("no samples to batch")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, samples already trained on)
        # Lightning calls set_epoch on ``dataloader.batch_sampler.sampler``, not on the batch sampler.
        self.sampler = self
        global_batch = batch_size * num_replicas
        if drop_last and num_samples < global_batch:
            raise ValueError(f"{num_samples} samples cannot fill one global batch of {global_batch} "
                             f"({batch_size} x {num_replicas} processes)")

    @property
    def num_batches(self) -> int:
        g = self.batch_size * self.num_replicas
        return self.num_samples // g if self.drop_last else math.ceil(self.num_samples / g)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self._resume and self._resume[0] != epoch:
            self._resume = None  # the resumed epoch is over

    def resume(self, epoch: int, samples_done: int) -> None:
        """Skip the global batches holding the first ``samples_done`` samples of ``epoch``'s order
        when it is next iterated (counted in samples, so a run may resume on another process count)."""
        self._resume = (epoch, samples_done)

    def _skip(self) -> int:
        if not self._resume or self._resume[0] != self.epoch:
            return 0
        return math.ceil(self._resume[1] / (self.batch_size * self.num_replicas))

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_samples)
        order = order.tolist()
        g = self.batch_size * self.num_replicas
        # Kept for every iterator of the resumed epoch: Lightning may create one and discard it.
        start = self._skip()
        for b in range(start, self.num_batches):
            batch = [order[(b * g + k) % self.num_samples] for k in range(g)]
            yield batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def __len__(self) -> int:
        # The whole epoch, also when resuming: Lightning's restored loop counters already count the
        # batches this iterator skips.
        return self.num_batches


class ResumableDataLoader(DataLoader):
    """A DataLoader over a GlobalBatchSampler whose position Lightning saves in checkpoints.

    ``progress()`` returns how many batches of the current epoch training has processed (taken
    from the trainer's loop, not from this iterator, which Lightning prefetches ahead).
    """

    def __init__(self, *args, progress: Callable[[], int], **kwargs):
        super().__init__(*args, **kwargs)
        self._progress = progress

    def state_dict(self) -> dict:
        sampler = self.batch_sampler
        done = int(self._progress()) * sampler.batch_size * sampler.num_replicas
        return {"epoch": sampler.epoch, "samples_done": done, "seed": sampler.seed}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.resume(state["epoch"], state["samples_done"])


class BucketBatchSampler(Sampler[list[int]]):
    """Batches whose samples share a bucket (so they stack), in a seeded random order each epoch.

    Indices are shuffled within each bucket, cut into batches (``drop_last`` drops each bucket's
    incomplete last batch), and the batches of all buckets are shuffled together. The order depends
    only on ``seed`` and the epoch (``set_epoch``, which Lightning calls through ``.sampler``). With
    ``num_replicas`` > 1 each rank takes every num_replicas-th batch of the same global order. Like
    ``GlobalBatchSampler`` it resumes mid-epoch (``resume``, through ``ResumableDataLoader``) with exactly
    the batches a run had not trained on yet, on the same number of processes.
    """

    def __init__(self, *, buckets: list[int], batch_size: int, shuffle: bool = True, drop_last: bool = True,
                 seed: int = 0, num_replicas: int = 1, rank: int = 0):
        # keyword-only, so Lightning's distributed-sampler injection fails loudly instead of passing a sampler
        # as `buckets`; with several devices set trainer.use_distributed_sampler=false (this shards by rank)
        self.buckets, self.batch_size = list(buckets), batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, samples already trained on)
        self.sampler = self  # Lightning calls set_epoch on `batch_sampler.sampler`

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self._resume and self._resume[0] != epoch:
            self._resume = None  # the resumed epoch is over

    def resume(self, epoch: int, samples_done: int) -> None:
        """Skip this rank's batches of ``epoch`` that the first ``samples_done`` samples (all processes') filled."""
        self._resume = (epoch, samples_done)

    def _batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        members: dict[int, list[int]] = {}
        for index, bucket in enumerate(self.buckets):
            members.setdefault(bucket, []).append(index)
        batches = []
        for bucket in sorted(members):
            indices = members[bucket]
            if self.shuffle:
                indices = [indices[i] for i in torch.randperm(len(indices), generator=g).tolist()]
            stop = len(indices) - len(indices) % self.batch_size if self.drop_last else len(indices)
            batches += [indices[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        if self.num_replicas > 1:
            batches = batches[: len(batches) - len(batches) % self.num_replicas][self.rank :: self.num_replicas]
        return batches

    def __iter__(self):
        skip = 0
        if self._resume and self._resume[0] == self.epoch:  # kept for every iterator of the resumed epoch
            skip = math.ceil(self._resume[1] / (self.batch_size * self.num_replicas))
        return iter(self._batches()[skip:])

    def __len__(self) -> int:
        counts: dict[int, int] = {}
        for bucket in self.buckets:
            counts[bucket] = counts.get(bucket, 0) + 1
        rounding = math.floor if self.drop_last else math.ceil
        total = sum(rounding(c / self.batch_size) for c in counts.values())
        return total // self.num_replicas if self.num_replicas > 1 else total
