"""Clip ranges (manifest range rows: source, start, end): which frames a range reads, the sample's identity,
split.json's footage_root and its boundary, and the one-line refusals (datasets/README.md, Clip ranges)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.clips import X264, encode, frame_index, frames, run_ffmpeg
from workbench.data.manifest import ManifestError, PathOutsideRoot, read_manifest
from workbench.data.video import VideoError, load_clip, probe

FPS = 16  # the long clip: 64 frames at 16 fps (4 s), frame k shows k (tests/helpers/clips.py)


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("footage")
    encode(out / "long.mp4", frames(64), str(FPS), X264)
    # variable frame rate: 30 fps for 1 s, then 10 fps to 2 s (as tests/helpers/clips.py's vfr clips)
    retime = ["-vf", "setpts='if(lt(N,30),N,30+(N-30)*3)'", "-fps_mode", "passthrough"]
    encode(out / "vfr.mp4", frames(41), "30", [*retime, *X264])
    encode(out / "rot0.mp4", frames(48, 32, 64), "24", X264)
    run_ffmpeg(["-display_rotation", "90", "-i", str(out / "rot0.mp4"), "-c", "copy", str(out / "rot90.mp4")])
    return out


def numbers(video) -> list[int]:
    """The frame numbers a (C, F, H, W) clip in [-1, 1] at the source's size shows."""
    pictures = ((video.permute(1, 2, 3, 0).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return [frame_index(p) for p in pictures]


def dataset(root: Path, rows: list[dict], split: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if split is not None:
        (root / "split.json").write_text(json.dumps(split))
    return root


def test_a_range_reads_the_frames_inside_it_at_the_target_fps(footage):
    path = footage / "long.mp4"
    # [1, 2] s holds frames 16..32; 5 frames at 8 fps span 8 source frames, centred: 20, 22, ..., 28
    assert numbers(load_clip(path, 5, 48, 64, 8, 1.0, 2.0)) == [20, 22, 24, 26, 28]
    # consecutive frames (fps None) from the centre of [2.5, 3.5] s (frames 40..56)
    assert numbers(load_clip(path, 5, 48, 64, None, 2.5, 3.5)) == [46, 47, 48, 49, 50]
    # the whole file as a range is the whole file
    whole = load_clip(path, 9, 48, 64, 8)
    assert numbers(whole) == numbers(load_clip(path, 9, 48, 64, 8, 0.0, 63 / FPS))
    assert numbers(whole) == [24, 26, 28, 30, 32, 34, 36, 38, 40]  # frames 0..63, centred (23.5 rounds up)


def test_a_range_shorter_than_the_clip_is_too_short_naming_the_range(footage):
    with pytest.raises(VideoError, match=r"too short: range 1\.000-1\.500 s has 9 frames"):
        load_clip(footage / "long.mp4", 9, 48, 64, 8, 1.0, 1.5)
    with pytest.raises(VideoError, match=r"range 3\.500-9\.000 s .*the file ends at 3\.938 s"):
        load_clip(footage / "long.mp4", 9, 48, 64, 8, 3.5, 9.0)


def test_a_vfr_range_is_sampled_by_its_timestamps(footage):
    info = probe(footage / "vfr.mp4")
    assert info.vfr
    # [1, 2] s: frames 30..40 at 10 fps; 5 frames at 5 fps, centred: 31, 33, ..., 39
    assert numbers(load_clip(footage / "vfr.mp4", 5, 48, 64, 5, 1.0, 2.0)) == [31, 33, 35, 37, 39]
    # [0, 0.5] s: 30 fps frames 0..15; 5 frames at 10 fps: every third, centred
    assert numbers(load_clip(footage / "vfr.mp4", 5, 48, 64, 10, 0.0, 0.5)) == [1, 4, 7, 10, 13]


def test_a_rotated_range_is_read_as_displayed(footage):
    upright = load_clip(footage / "rot0.mp4", 5, 32, 64, 8, 0.5, 1.5)
    rotated = load_clip(footage / "rot90.mp4", 5, 64, 32, 8, 0.5, 1.5)
    assert rotated.shape == (3, 5, 64, 32)
    turned = [np.rot90(upright.numpy(), k, axes=(2, 3)) for k in (1, 3)]
    assert min(np.abs(t - rotated.numpy()).max() for t in turned) < 0.1


def test_two_ranges_of_one_source_are_two_samples(tmp_path, footage):
    from workbench.data.dataset import VideoCaptionDataset

    root = dataset(tmp_path / "d", [{"source": "long.mp4", "start": 0.5, "end": 1.75, "caption": "a"},
                                    {"source": "long.mp4", "start": 2.0, "end": 3.5, "caption": "b"},
                                    {"file_name": "long.mp4", "caption": "c", "source": "x.mov", "start": 1, "end": 2}])
    shutil.copy(footage / "long.mp4", root / "long.mp4")
    entries = read_manifest(root)
    assert [e.key for e in entries] == ["long.mp4@0.500-1.750", "long.mp4@2.000-3.500", "long.mp4"]
    assert entries[2].range is None and entries[2].provenance == ("x.mov", 1.0, 2.0)  # read whole
    data = VideoCaptionDataset(root, entries, 5, 48, 64, 8)
    assert [data[i]["id"] for i in range(3)] == [e.key for e in entries]
    assert numbers(data[0]["video"]) == [14, 16, 18, 20, 22]  # frames 8..28, centred
    assert numbers(data[1]["video"]) == [40, 42, 44, 46, 48]  # frames 32..56


def test_footage_root_from_split_json_and_its_boundary(tmp_path, footage):
    shots = tmp_path / "shots"
    root = dataset(shots, [{"source": "long.mp4", "start": 1.0, "end": 2.0, "caption": "a"}],
                   {"footage_root": str(footage)})
    entry = read_manifest(root)[0]
    assert entry.path(root) == footage / "long.mp4"
    assert numbers(load_clip(entry.path(root), 5, 48, 64, 8, entry.start, entry.end)) == [20, 22, 24, 26, 28]
    # relative to the dataset root
    (shots / "split.json").write_text(json.dumps({"footage_root": os.path.relpath(footage, shots)}))
    assert read_manifest(root)[0].path(root).resolve() == (footage / "long.mp4").resolve()
    # the footage root is the boundary: absolute, .. and a symlink out are refused, naming the line
    (footage / "out.mp4").unlink(missing_ok=True)
    elsewhere = tmp_path / "elsewhere.mp4"
    elsewhere.write_bytes(b"x")
    (footage / "out.mp4").symlink_to(elsewhere)
    for source, why in ((str(footage / "long.mp4"), "absolute path"), ("../shots/metadata.jsonl", "leaves the footage"),
                        ("out.mp4", "is a symlink to")):
        dataset(shots, [{"source": source, "start": 1.0, "end": 2.0, "caption": "a"}])
        with pytest.raises(PathOutsideRoot, match=why) as e:
            read_manifest(root)[0].path(root)
        assert "metadata.jsonl:1" in str(e.value) and "footage root" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("split, why", [("{not json", "not JSON"), ('{"root": "x"}', 'no "footage_root"'),
                                        ('{"footage_root": "missing"}', "is not a folder")])
def test_a_bad_split_json_is_one_line_naming_it(tmp_path, split, why):
    root = dataset(tmp_path / "d", [{"source": "a.mp4", "start": 0, "end": 1, "caption": "a"}])
    (root / "split.json").write_text(split)
    with pytest.raises(ManifestError, match=why) as e:
        read_manifest(root)
    assert "split.json" in str(e.value) and "footage_root" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("row, why", [
    ({"source": "a.mp4", "start": 1}, "start without end"),
    ({"source": "a.mp4", "end": 1}, "end without start"),
    ({"source": "a.mp4", "start": "soon", "end": 2}, "start='soon' is not a number"),
    ({"source": "a.mp4", "start": True, "end": 2}, "start=True is not a number"),
    ({"source": "a.mp4", "start": 2, "end": 2}, "0 <= start < end"),
    ({"source": "a.mp4", "start": -1, "end": 2}, "0 <= start < end"),
    ({"source": "a.mp4", "start": 0, "end": float("inf")}, "is not a number"),
    ({"file_name": "a.mp4", "start": 0, "end": 1}, "without 'source'"),
])
def test_bad_start_end_are_one_line_manifest_errors(tmp_path, row, why):
    root = dataset(tmp_path / "d", [{"file_name": "b.mp4", "caption": "ok"}, {**row, "caption": "a"}])
    with pytest.raises(ManifestError, match=why) as e:
        read_manifest(root)
    assert "metadata.jsonl:2" in str(e.value) and "\n" not in str(e.value)


def test_csv_range_rows(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "metadata.csv").write_text("file_name,source,start,end,caption,shot\n,long.mp4,1,2.5,a,3\n"
                                       "clip.mp4,long.mp4,0,1,b,4\nplain.mp4,,,,c,\n")
    entries = read_manifest(root)
    assert [e.key for e in entries] == ["long.mp4@1.000-2.500", "clip.mp4", "plain.mp4"]
    (root / "metadata.csv").write_text("source,start,end,caption\nlong.mp4,2,1,a\n")
    with pytest.raises(ManifestError, match=r"metadata.csv:2: range start=2 end=1"):
        read_manifest(root)


def test_data_check_checks_each_range_as_its_own_sample(tmp_path, footage):
    from workbench.data.check import check_dataset

    root = dataset(tmp_path / "d", [{"source": "long.mp4", "start": 0.0, "end": 1.5, "caption": "a"},
                                    {"source": "long.mp4", "start": 2.0, "end": 3.5, "caption": "b"},
                                    {"source": "long.mp4", "start": 2.0, "end": 3.5, "caption": "b again"},
                                    {"source": "long.mp4", "start": 3.0, "end": 3.5, "caption": "too short"}],
                   {"footage_root": str(footage)})
    report = check_dataset(root, 9, 8.0, 48, 64, jobs=1, progress=False)
    assert [s["file"] for s in report.samples] == ["long.mp4@0.000-1.500", "long.mp4@2.000-3.500", "long.mp4@2.000-3.500",
                           "long.mp4@3.000-3.500"]
    # one file, not duplicate_content (the counter clip's digits jump every 8 frames, which the shot detector of
    # data check's footage step reads as cuts: crosses_transition is not this test's concern)
    issues = [[c for c in s["issues"] if c != "crosses_transition"] for s in report.samples]
    assert issues[0] == [] and issues[1] == []
    assert issues[2] == ["duplicate_entry"]  # the same range twice
    assert issues[3] == ["too_short"]
    message = next(i.message for i in report.issues if i.code == "too_short")
    assert "range 3.000-3.500 s has 9 frames at 16 fps" in message and "a longer range" in message
    assert report.samples[0]["video"]["num_frames"] == 25  # the range's frames, not the file's 64
