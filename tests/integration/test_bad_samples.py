"""``data.on_bad_sample``: ``error`` stops on a bad sample with its file and reason; ``skip`` trains on the
rest and reports what it skipped. Also aspect-ratio buckets through the data module.

In-process (Lightning Trainer on the tiny model), so a failure shows the real traceback.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import lightning as L
import pytest

from tests.helpers.clips import shape_clip

from workbench.data.dataset import SampleError
from workbench.train.datamodule import VideoDataModule

DATA = dict(num_frames=9, height=64, width=64, fps=8)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def clip(path: Path, frames: int = 24, fps: float = 16, height: int = 64, width: int = 96, colour=(230, 40, 40)):
    return shape_clip(path, frames, fps, height, width, colour, "square", "top to bottom")


def write_jsonl(root: Path, rows) -> None:
    (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f, "caption": c}) + "\n" for f, c in rows))


BAD = {  # file -> reason code the skip report must give
    "videos/truncated.mp4": "corrupt",
    "videos/empty.mp4": "zero_length",
    "videos/notes.mp4": "not_video",
    "videos/short.mp4": "too_short",
    "videos/nocaption.mp4": "missing_caption",
    "../outside.mp4": "path_outside_root",
    "videos/missing.mp4": "missing_file",
}


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory) -> Path:
    """4 good clips (two sizes) with every kind of unusable sample; the first bad one is 2nd in the manifest."""
    base = tmp_path_factory.mktemp("bad-data")
    root = base / "data"
    v = root / "videos"
    for i in range(3):
        clip(v / f"good{i}.mp4", colour=(40 + 60 * i, 200, 60))
    clip(v / "tall.mp4", frames=20, fps=10, height=96, width=64)
    good = (v / "good0.mp4").read_bytes()
    (v / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (v / "empty.mp4").write_bytes(b"")
    (v / "notes.mp4").write_text("not a video\n")
    clip(v / "short.mp4", frames=6)
    clip(v / "nocaption.mp4")
    (base / "outside.mp4").write_bytes(good)
    rows = [("videos/good0.mp4", "a green square moving down"), ("videos/truncated.mp4", "a square")]
    rows += [(f, None if code == "missing_caption" else "a square")
             for f, code in BAD.items() if f != "videos/truncated.mp4"]
    rows += [("videos/good1.mp4", "a square"), ("videos/good2.mp4", "a square"), ("videos/tall.mp4", "a tall square")]
    write_jsonl(root, rows)
    return root


@pytest.fixture(scope="module")
def bad_data_inside(bad_data, tmp_path_factory) -> Path:
    """``bad_data`` without its entry outside the dataset root (refused before anything is decoded)."""
    import shutil

    root = tmp_path_factory.mktemp("bad-data-inside") / "data"
    shutil.copytree(bad_data, root)
    lines = (root / "metadata.jsonl").read_text().splitlines(keepends=True)
    (root / "metadata.jsonl").write_text("".join(line for line in lines if "../outside.mp4" not in line))
    return root


def trainer(tmp_path: Path, max_steps: int = 2) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, default_root_dir=str(tmp_path))


def module(tiny_model_dir):
    from workbench.train.module import CogVideoXModule

    return CogVideoXModule(model=str(tiny_model_dir), lora={"rank": 4, "alpha": 4}, warmup_steps=0,
                           validation={"timesteps": 1})


def test_error_policy_refuses_paths_outside_the_root_before_training(bad_data):
    from workbench.data.manifest import ManifestError

    dm = VideoDataModule(str(bad_data), **DATA, batch_size=1, num_workers=0)
    with pytest.raises(ManifestError, match=r"\.\./outside\.mp4 \(metadata\.jsonl:7\): path leaves the dataset root"):
        dm.setup("fit")


def test_error_policy_stops_with_file_and_reason(bad_data_inside):
    dm = VideoDataModule(str(bad_data_inside), **DATA, batch_size=1, num_workers=0)  # on_bad_sample: error
    dm.setup("fit")
    assert len(dm.train_set) == 10  # nothing dropped, nothing decoded: the behaviour before on_bad_sample
    loader = dm._loader(dm.train_set, shuffle=False)
    with pytest.raises(SampleError, match=r"videos/truncated\.mp4 \(metadata\.jsonl:2\): cannot decode"):
        for _ in loader:
            pass
    assert dm.skipped_report_path() is None


def test_error_policy_stops_training(bad_data_inside, tiny_model_dir, tmp_path):
    dm = VideoDataModule(str(bad_data_inside), **DATA, batch_size=1, num_workers=0, on_bad_sample="error")
    with pytest.raises(SampleError, match=r"metadata\.jsonl:\d+\): "):
        trainer(tmp_path, max_steps=12).fit(module(tiny_model_dir), dm)


def test_skip_policy_trains_on_the_rest_and_reports(bad_data, tiny_model_dir, tmp_path):
    dm = VideoDataModule(str(bad_data), **DATA, batch_size=2, num_workers=0, on_bad_sample="skip")
    t = trainer(tmp_path, max_steps=3)
    t.fit(module(tiny_model_dir), dm)
    assert t.global_step == 3
    assert sorted(e.file_name for e in dm.train_set.entries) == sorted(
        ["videos/good0.mp4", "videos/good1.mp4", "videos/good2.mp4", "videos/tall.mp4"])
    path = dm.skipped_report_path()
    assert path == tmp_path / "version_0" / "skipped_samples.json"  # the run directory (no MLflow logger here)
    records = json.loads(path.read_text())
    assert {r["file"]: r["code"] for r in records} == BAD
    assert records == dm.skipped
    for r in records:
        assert r["reason"].startswith(f"{r['file']} ({r['where']}): ") and r["stage"] == "setup"


def test_skip_replaces_a_clip_that_breaks_after_setup(bad_data, tmp_path):
    """A clip that passed setup but fails to decode later is replaced by the next one and recorded."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(bad_data, root)
    dm = VideoDataModule(str(root), **DATA, batch_size=1, num_workers=0, on_bad_sample="skip",
                         report_dir=str(tmp_path / "report"))
    dm.setup("fit")
    victim = root / "videos" / "good1.mp4"
    victim.write_bytes(victim.read_bytes()[:100])
    ids = []
    for batch in dm._loader(dm.train_set, shuffle=False):
        batch = dm.on_before_batch_transfer(batch, 0)
        assert "skipped" not in batch
        ids += batch["id"]
    assert ids == ["videos/good0.mp4", "videos/good2.mp4", "videos/good2.mp4", "videos/tall.mp4"]
    records = json.loads((tmp_path / "report" / "skipped_samples.json").read_text())
    [late] = [r for r in records if r["stage"] == "load"]
    assert late["file"] == "videos/good1.mp4" and "cannot decode" in late["reason"]
    assert len(records) == len(BAD) + 1


def test_buckets_keep_aspect_ratio_and_batches_stack(bad_data, tiny_model_dir, tmp_path):
    dm = VideoDataModule(str(bad_data), **DATA, batch_size=2, num_workers=0, on_bad_sample="skip",
                         buckets=[[64, 96], [96, 64]], report_dir=str(tmp_path))
    dm.setup("fit")
    sizes = dict(zip((e.file_name for e in dm.train_set.entries), dm.train_set.sizes))
    assert sizes == {"videos/good0.mp4": (64, 96), "videos/good1.mp4": (64, 96), "videos/good2.mp4": (64, 96),
                     "videos/tall.mp4": (96, 64)}
    val = [b["video"].shape[-2:] for b in dm.val_dataloader()]  # no drop_last: every sample once
    assert sorted(tuple(s) for s in val) == [(64, 96), (64, 96), (96, 64)]
    train = list(dm.train_dataloader())  # drop_last per bucket: 3 wide -> one batch of 2, tall alone -> none
    assert [tuple(b["video"].shape) for b in train] == [(2, 3, 9, 64, 96)]
    t = trainer(tmp_path, max_steps=2)
    t.fit(module(tiny_model_dir), dm)
    assert t.global_step == 2


@pytest.mark.timeout(120)
def test_fuzz_skip_never_crashes_or_hangs(tmp_path):
    """Random bytes and truncated files as videos: setup drops them, an epoch runs on the rest."""
    rng = random.Random(1)
    root = tmp_path / "data"
    good = clip(root / "good.mp4").read_bytes()
    rows = [("good.mp4", "a square")]
    for i in range(16):
        data = rng.randbytes(rng.randint(1, 3000)) if i % 2 else good[: rng.randint(1, len(good) - 1)]
        (root / f"f{i}.mp4").write_bytes(data)
        rows.append((f"f{i}.mp4", "a square"))
    write_jsonl(root, rows)
    dm = VideoDataModule(str(root), **DATA, batch_size=1, num_workers=0, on_bad_sample="skip",
                         report_dir=str(tmp_path / "report"))
    dm.setup("fit")
    batches = [dm.on_before_batch_transfer(b, 0) for b in dm.train_dataloader()]
    assert len(batches) == len(dm.train_set) >= 1
    assert {r["file"] for r in dm.skipped} | {e.file_name for e in dm.train_set.entries} == {f for f, _ in rows}


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00garbage\x80", b'{"file_name": "a.mp4", "caption": '])
def test_garbage_manifest_is_a_manifest_error(tmp_path, garbage):
    from workbench.data.manifest import ManifestError

    (tmp_path / "metadata.jsonl").write_bytes(garbage)
    dm = VideoDataModule(str(tmp_path), **DATA, num_workers=0, on_bad_sample="skip")
    with pytest.raises(ManifestError, match=r"metadata\.jsonl"):
        dm.setup("fit")
