"""FVD and CLIP-score states gathered over two gloo processes (CPU) equal the one-process values,
also when a process gets no video at all (more processes than batches).

torchmetrics stands in a 1-D empty tensor for an empty list state; gathered with another process's
(n, 400) features it made gloo abort ("Received data size doesn't match"). The workers write their
``compute()`` values to JSON; the test compares them with one process updating the same batches.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.filterwarnings("ignore:FVD .* rank-deficient:UserWarning")

WORLD = 2
PROMPTS = ["a red car on a road", "boats on the sea at sunset", "a dog running on the beach"]


def _videos(seed: int, n: int, frames: int = 16, size: int = 16) -> torch.Tensor:
    return torch.rand(n, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _data() -> dict:
    """The same tensors in every process (seeded)."""
    return {
        "real": _videos(0, 6),
        "fake": _videos(1, 5) * 0.8,
        "clip": _videos(2, 3, frames=2, size=32),
    }


def _split(x, rank: int):
    """Rank 0 takes the first part, rank 1 the rest (uneven on purpose)."""
    cut = (len(x) + 1) // 2
    return x[:cut] if rank == 0 else x[cut:]


def _synced(rank: int, paths: dict) -> dict:
    from workbench.metrics import FrechetVideoDistance, ReferenceStatistics, VideoCLIPScore

    data, out = _data(), {}
    # 1. More processes than batches: rank 0 gets the only batch of each set, rank 1 nothing.
    fvd = FrechetVideoDistance(paths["i3d"], batch_size=8)
    if rank == 0:
        fvd.update(data["real"], real=True)
        fvd.update(data["fake"], real=False)
    out["fvd_one_rank"] = float(fvd.compute())
    out["fvd_one_rank_local_rows"] = int(fvd.features(real=False).shape[0])  # local state back after compute
    # 2. The same with cached reference statistics: the real list is empty on every process.
    fvd = FrechetVideoDistance(paths["i3d"], reference=ReferenceStatistics.load(paths["reference"]))
    if rank == 0:
        fvd.update(data["fake"], real=False)
    out["fvd_reference_one_rank"] = float(fvd.compute())
    # 3. Both processes get videos (3 + 3 real, 3 + 2 generated).
    fvd = FrechetVideoDistance(paths["i3d"], batch_size=8)
    fvd.update(_split(data["real"], rank), real=True)
    fvd.update(_split(data["fake"], rank), real=False)
    out["fvd_split"] = float(fvd.compute())
    # 4. CLIP score: rank 1 scores nothing; then both score some.
    clip = VideoCLIPScore(paths["clip"])
    if rank == 0:
        clip.update(data["clip"], PROMPTS)
    out["clip_one_rank"] = float(clip.compute())
    clip.reset()
    clip.update(_split(data["clip"], rank), _split(PROMPTS, rank))
    out["clip_split"] = float(clip.compute())
    return out


def _worker(rank: int, paths: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{paths['rendezvous']}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        result = {"synced": _synced(rank, paths), "one_process": _one_process(paths, sync_on_compute=False)}
        Path(paths["out"], f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def gathered(tmp_path_factory):
    from workbench.metrics import reference_statistics
    from workbench.metrics.standins import build_tiny_clip, build_tiny_i3d

    root = tmp_path_factory.mktemp("fvd-sync")
    paths = {"i3d": str(build_tiny_i3d(root / "i3d.pt")), "clip": str(build_tiny_clip(root / "clip")),
             "rendezvous": str(root / "rendezvous"), "out": str(root), "reference": str(root / "ref.safetensors")}
    reference_statistics(paths["i3d"], _data()["real"], paths["reference"])
    mp.spawn(_worker, args=(paths,), nprocs=WORLD, join=True)
    return paths, [json.loads(Path(root, f"rank{r}.json").read_text()) for r in range(WORLD)]


def _one_process(paths: dict, **kwargs) -> dict:
    """The values one process gets for all the videos (``sync_on_compute=False`` inside a worker)."""
    from workbench.metrics import FrechetVideoDistance, ReferenceStatistics, VideoCLIPScore

    data, out = _data(), {}
    fvd = FrechetVideoDistance(paths["i3d"], batch_size=8, **kwargs)
    fvd.update(data["real"], real=True)
    fvd.update(data["fake"], real=False)
    out["fvd_one_rank"] = float(fvd.compute())
    fvd = FrechetVideoDistance(paths["i3d"], reference=ReferenceStatistics.load(paths["reference"]), **kwargs)
    fvd.update(data["fake"], real=False)
    out["fvd_reference_one_rank"] = float(fvd.compute())
    fvd = FrechetVideoDistance(paths["i3d"], batch_size=8, **kwargs)
    for rank in range(WORLD):  # the same batches, in rank order, as the gather concatenates them
        fvd.update(_split(data["real"], rank), real=True)
        fvd.update(_split(data["fake"], rank), real=False)
    out["fvd_split"] = float(fvd.compute())
    clip = VideoCLIPScore(paths["clip"], **kwargs)
    clip.update(data["clip"], PROMPTS)
    out["clip_one_rank"] = out["clip_split"] = float(clip.compute())
    return out


def test_two_processes_equal_one_process_also_with_an_idle_process(gathered):
    paths, ranks = gathered
    for r in ranks:
        synced, expected = r["synced"], r["one_process"]
        for key in ("fvd_one_rank", "fvd_reference_one_rank", "fvd_split"):
            assert synced[key] == pytest.approx(expected[key], rel=1e-9, abs=0), key
        for key in ("clip_one_rank", "clip_split"):  # float32 mean of the same scores, summed in another order
            assert synced[key] == pytest.approx(expected[key], rel=1e-6), key
        assert expected["fvd_split"] > 1e-3  # not trivially zero
    # compute() synced, then restored each process's own features (unsync): rank 1 still has none.
    assert [r["synced"]["fvd_one_rank_local_rows"] for r in ranks] == [5, 0]
    # And this pytest process (other thread count, so float32 detector round-off) agrees closely.
    here = _one_process(paths)
    for key, value in here.items():
        assert ranks[0]["synced"][key] == pytest.approx(value, rel=1e-6), key
