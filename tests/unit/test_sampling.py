"""GlobalBatchSampler: same global batches for any process count; exact mid-epoch resume."""

import pytest

from workbench.data.batching import GlobalBatchSampler


def _epoch(n, bs, world, epoch=0, shuffle=True, drop_last=True, resume=None):
    per_rank = []
    for rank in range(world):
        s = GlobalBatchSampler(n, bs, world, rank, shuffle=shuffle, seed=3, drop_last=drop_last)
        s.set_epoch(epoch)
        if resume is not None:
            s.resume(epoch, resume)
        per_rank.append(list(s))
        assert len(s) == s.num_batches
    # global batch b = concatenation of every rank's b-th batch
    return [sum((r[b] for r in per_rank), []) for b in range(len(per_rank[0]))]


def test_one_process_equals_two():
    assert _epoch(10, 4, 1) == _epoch(10, 2, 2) == _epoch(10, 1, 4)


def test_epochs_differ_and_cover_each_sample_once():
    e0, e1 = _epoch(12, 2, 2, epoch=0), _epoch(12, 2, 2, epoch=1)
    assert e0 != e1
    assert sorted(sum(e0, [])) == list(range(12))


def test_resume_skips_exactly_the_trained_batches():
    full = _epoch(16, 2, 1)
    assert _epoch(16, 2, 1, resume=6) == full[3:]
    # resumed on 2 processes with the same global batch: the same remaining batches
    assert _epoch(16, 1, 2, resume=6) == full[3:]
    # a resume recorded for another epoch is ignored
    s = GlobalBatchSampler(16, 2, seed=3)
    s.resume(5, 6)
    s.set_epoch(0)
    assert len(list(s)) == 8


def test_validation_pads_the_last_global_batch():
    batches = _epoch(5, 2, 2, shuffle=False, drop_last=False)
    assert batches == [[0, 1, 2, 3], [4, 0, 1, 2]]


def test_too_few_samples_for_a_global_batch():
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        GlobalBatchSampler(3, 2, num_replicas=2)


def test_lightning_sets_the_epoch_and_a_resume_survives_a_discarded_iterator():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    s = GlobalBatchSampler(16, 2, seed=3)
    loader = DataLoader(list(range(16)), batch_sampler=s)
    _set_sampler_epoch(loader, 1)
    assert s.epoch == 1  # a new order each epoch
    s.resume(1, 6)
    iter(loader)  # Lightning creates an iterator at restore time and another at the epoch start
    assert len(list(iter(s))) == 5
    assert len(list(iter(s))) == 5
    _set_sampler_epoch(loader, 2)
    assert len(list(iter(s))) == 8  # the next epoch starts from its first batch
