"""``workbench data check`` (workbench.data.check) and the bucket sampler, on datasets built here."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from tests.helpers.clips import shape_clip

from workbench.data.check import check_dataset
from workbench.model.families import family_of_model
from workbench.data.validate import UNUSABLE, nearest_bucket, validate_entries
from workbench.data.batching import BucketBatchSampler
from workbench.data.manifest import Entry, ManifestError, read_manifest

RECIPE = dict(num_frames=9, fps=8.0, height=64, width=64)  # 9 frames at 8 fps: clips need 1.0 s
LONG_CAPTION = " ".join(["a red circle moving from left to right on a dark background"] * 40)  # ~400 tokens


def clip(path: Path, frames: int = 24, fps: float = 16, height: int = 64, width: int = 96, colour=(230, 40, 40)):
    return shape_clip(path, frames, fps, height, width, colour, "circle", "left to right")


def write_jsonl(root: Path, rows: list[tuple[str, str | None]]) -> None:
    (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f, "caption": c}) + "\n" for f, c in rows))


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    """One dataset with every kind of problem the checker knows, and good clips of two sizes and rates."""
    base = tmp_path_factory.mktemp("messy")
    root = base / "data"
    v = root / "videos"
    clip(v / "good_a.mp4")
    clip(v / "good_b.mp4", frames=30, fps=24, height=80, width=80, colour=(40, 200, 60))
    clip(v / "small.mp4", frames=40, fps=30, height=40, width=40, colour=(50, 80, 240))
    clip(v / "narrow.mp4", height=64, width=48)  # decord 0.6 mis-decodes 48 px wide frames; PyAV reads them
    clip(v / "short.mp4", frames=5)
    good = (v / "good_a.mp4").read_bytes()
    (v / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (v / "empty.mp4").write_bytes(b"")
    (v / "notes.mp4").write_text("these are my notes, not a video\n")
    (v / "copy_of_a.mp4").write_bytes(good)
    (base / "outside.mp4").write_bytes(good)
    os.symlink(base / "outside.mp4", v / "link_out.mp4")
    write_jsonl(root, [
        ("videos/good_a.mp4", "a red circle moving from left to right"),
        ("videos/good_b.mp4", "a green circle moving from left to right"),
        ("videos/short.mp4", "a red circle"),
        ("videos/truncated.mp4", "a red circle"),
        ("videos/empty.mp4", "a red circle"),
        ("videos/notes.mp4", "a red circle"),
        ("videos/good_a.mp4", None),                      # missing caption, and listed twice
        ("videos/copy_of_a.mp4", LONG_CAPTION),           # same bytes as good_a; caption too long
        ("../outside.mp4", "a red circle"),
        ("videos/link_out.mp4", "a red circle"),
        ("/etc/hostname", "a red circle"),
        ("videos/missing.mp4", "a red circle"),
        ("videos/good_b.mp4", "a green\x07 circle"),      # control character (and a duplicate entry)
        ("videos/small.mp4", "a blue circle moving from left to right"),  # upscaled to 64x64
        ("videos/narrow.mp4", "a red circle moving from left to right"),
    ])
    return root


EXPECTED = {  # manifest line -> (file, code)
    3: ("videos/short.mp4", "too_short"),
    4: ("videos/truncated.mp4", "corrupt"),
    5: ("videos/empty.mp4", "zero_length"),
    6: ("videos/notes.mp4", "not_video"),
    7: ("videos/good_a.mp4", "missing_caption"),
    8: ("videos/copy_of_a.mp4", "caption_too_long"),
    9: ("../outside.mp4", "path_outside_root"),
    10: ("videos/link_out.mp4", "path_outside_root"),
    11: ("/etc/hostname", "path_outside_root"),
    12: ("videos/missing.mp4", "missing_file"),
    13: ("videos/good_b.mp4", "caption_control_chars"),
}


@pytest.fixture(scope="module")
def messy_report(messy, tiny_model_dir):
    max_len = family_of_model(str(tiny_model_dir)).text_len
    assert max_len == 32  # the tiny transformer's max_text_seq_length
    return check_dataset(messy, **RECIPE, tokenizer=str(tiny_model_dir), max_text_len=max_len, jobs=2, progress=False)


def test_check_names_every_bad_sample_with_its_reason(messy_report):
    found = {(i.where, i.code): i for i in messy_report.issues}
    for line, (file, code) in EXPECTED.items():
        issue = found.get((f"metadata.jsonl:{line}", code))
        assert issue is not None, f"line {line} {file}: no {code} in {sorted(found)}"
        assert issue.file == file and issue.message.startswith(f"{file} (metadata.jsonl:{line}): ")
        assert issue.severity == ("error" if code in UNUSABLE else "warning")
    assert ("metadata.jsonl:8", "duplicate_content") in found  # same sha256 as good_a
    assert ("metadata.jsonl:7", "duplicate_entry") in found and ("metadata.jsonl:13", "duplicate_entry") in found
    # the good clips have no issue at all
    good_lines = ("metadata.jsonl:1", "metadata.jsonl:2", "metadata.jsonl:14", "metadata.jsonl:15")
    assert not [i for i in messy_report.issues if i.where in good_lines]
    assert not messy_report.ok


def test_messages_say_what_and_how_to_fix(messy_report):
    by_code = {i.code: i.message for i in messy_report.issues}
    assert "5 frames at 16 fps (0.31 s); recipe needs 9 frames at 8 fps (1.0 s)" in by_code["too_short"]
    assert "moov" in by_code["corrupt"] and "truncated" in by_code["corrupt"]
    assert "text file" in by_code["not_video"]
    assert "tokens; the model reads 32" in by_code["caption_too_long"]
    assert "U+0007" in by_code["caption_control_chars"]


def test_summary_histograms_and_resize_notes(messy_report):
    s = messy_report.summary
    assert set(s["resolutions"]) == {"96x64", "80x80", "40x40", "48x64"}  # width x height
    assert set(s["fps"]) == {"16", "24", "30"}
    assert s["cropped"] >= 1 and s["upscaled"] >= 1 and s["fps_resampled"] >= 1
    notes = " ".join(messy_report.notes)
    assert "centre-cropped" in notes and "resampled to 8 fps" in notes and "NOT checked" not in notes


def test_report_files(messy_report, tmp_path):
    path = messy_report.write(tmp_path)
    data = json.loads(path.read_text())
    assert data["manifest_layout"] == "metadata.jsonl" and data["recipe"]["num_frames"] == 9
    assert data["counts"]["entries"] == 15 and data["counts"]["usable_samples"] == 6
    assert data["counts"]["errors"] == len(messy_report.errors) and not data["ok"]
    assert {s["file"] for s in data["samples"] if s["usable"]} == {"videos/good_a.mp4", "videos/good_b.mp4",
                                                                   "videos/copy_of_a.mp4", "videos/small.mp4",
                                                                   "videos/narrow.mp4"}
    assert "videos/short.mp4" in (tmp_path / "report.md").read_text()


def _cli(args: list[str]) -> int:
    from workbench.cli import main

    return main(["data", "check", *args])


def test_cli_exit_status_and_outputs(messy, sample_data_dir, tiny_model_dir, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model:\n  model: {tiny_model_dir}\n"
                      "data:\n  num_frames: 9\n  fps: 8\n  height: 64\n  width: 64\n")
    assert _cli([str(messy), "--recipe", str(recipe), "--out", str(tmp_path / "bad"), "--jobs", "2"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "videos/truncated.mp4" in out and "caption_too_long" in out
    assert json.loads((tmp_path / "bad" / "report.json").read_text())["tokenizer"] == str(tiny_model_dir)

    clean = ["--num-frames", "9", "--fps", "8", "--height", "64", "--width", "64", "--jobs", "2"]
    assert _cli([str(sample_data_dir), *clean, "--out", str(tmp_path / "good")]) == 0
    assert "caption length NOT checked" in capsys.readouterr().out

    assert _cli([str(tmp_path / "nope"), *clean]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert _cli([str(sample_data_dir), "--num-frames", "10"]) == 2  # not 4k+1
    assert "4k+1" in capsys.readouterr().err


def test_non_utf8_manifest_is_a_dataset_error_not_a_crash(tmp_path):
    (tmp_path / "metadata.jsonl").write_bytes(b'{"file_name": "a.mp4", "caption": "ok"}\n'
                                              b'{"file_name": "b.mp4", "caption": "caf\xe9"}\n')
    report = check_dataset(tmp_path, **RECIPE, progress=False)
    [issue] = report.issues
    assert issue.code == "manifest_not_utf8" and issue.where == "metadata.jsonl:2"
    assert "byte 0xe9" in issue.message and "UTF-8" in issue.message and not report.ok


def test_prompts_videos_line_count_mismatch(tmp_path):
    clip(tmp_path / "a.mp4")
    (tmp_path / "videos.txt").write_text("a.mp4\n")
    (tmp_path / "prompts.txt").write_text("a red circle\nan orphan prompt\n")
    report = check_dataset(tmp_path, **RECIPE, jobs=1, progress=False)
    assert [i.code for i in report.errors] == ["line_count_mismatch"]
    assert "prompts.txt has 2 lines but videos.txt has 1" in report.errors[0].message


FAKE_DECORD = '''
import os, signal, time
def cpu(i=0):
    return None
class VideoReader:
    def __init__(self, path, ctx=None, num_threads=0):
        name = os.path.basename(path)
        if name == "crash.mp4":
            os.kill(os.getpid(), signal.SIGSEGV)
        if name == "hang.mp4":
            time.sleep(3600)
        raise RuntimeError("Error reading " + path)
'''


@pytest.mark.timeout(60)
def test_decoder_crash_or_hang_is_reported_and_the_check_goes_on(tmp_path, monkeypatch):
    """A decoder that segfaults or hangs (decord does on some files) costs one file, not the check."""
    fake = tmp_path / "fake"
    (fake / "decord").mkdir(parents=True)
    (fake / "decord" / "__init__.py").write_text(FAKE_DECORD)
    monkeypatch.setenv("PYTHONPATH", str(fake))  # the decoder worker process imports the fake decord
    root = tmp_path / "data"
    root.mkdir()
    names = ["crash.mp4", "hang.mp4", "after.mp4"]
    for name in names[:2]:  # real clips: the worker reaches decord only after PyAV has indexed the file
        clip(root / name)
    (root / "after.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    entries = [Entry(n, "a caption", f"videos.txt:{i}") for i, n in enumerate(names, 1)]
    results = validate_entries(root, entries, 9, 8.0, jobs=1, timeout=3, progress=False)
    assert [r.code for r in results] == ["decoder_crash", "decoder_timeout", "corrupt"]
    assert "SIGSEGV" in results[0].reason and "did not finish in 3 s" in results[1].reason


@pytest.mark.timeout(120)
def test_fuzz_random_and_truncated_videos_never_crash_the_check(tmp_path):
    rng = random.Random(0)
    good = clip(tmp_path / "src.mp4").read_bytes()
    root = tmp_path / "data"
    root.mkdir()
    rows = []
    for i in range(24):
        kind = i % 3
        if kind == 0:
            data = rng.randbytes(rng.randint(1, 4000))
        elif kind == 1:
            data = good[: rng.randint(1, len(good) - 1)]
        else:
            data = bytearray(good)
            for _ in range(rng.randint(1, 50)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        (root / f"f{i}.mp4").write_bytes(data)
        rows.append((f"f{i}.mp4", "a caption"))
    write_jsonl(root, rows)
    report = check_dataset(root, **RECIPE, jobs=2, timeout=30, progress=False)
    assert len(report.samples) == 24
    for sample in report.samples:  # each file either decodes fully or is named with a reason
        problems = [i for i in report.errors if i.file == sample["file"]]
        assert sample["usable"] == (not problems)
    assert all(not s["usable"] for s in report.samples[:24:3])  # random bytes are never a video


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layout", ["metadata.jsonl", "metadata.csv", "prompts.txt"])
def test_fuzz_garbage_manifests_give_a_manifest_error(tmp_path, layout):
    rng = random.Random(layout)
    for trial in range(20):
        root = tmp_path / f"t{trial}"
        root.mkdir()
        garbage = rng.randbytes(rng.randint(1, 2000)) if trial % 2 else "".join(
            rng.choice("{}[]\",:;\n abc\\") for _ in range(rng.randint(1, 500))).encode()
        names = ["prompts.txt", "videos.txt"] if layout == "prompts.txt" else [layout]
        for name in names:
            (root / name).write_bytes(garbage)
        try:
            entries = read_manifest(root)
        except ManifestError as e:
            assert str(root) in str(e)  # names the manifest
            report = check_dataset(root, **RECIPE, progress=False)
            assert report.errors[0].code.startswith("manifest_") and not report.ok
        else:  # garbage that parses must still be checked without crashing
            report = check_dataset(root, **RECIPE, jobs=1, progress=False)
            assert len(report.samples) == len(entries) and not report.ok


def test_nearest_bucket():
    buckets = [(480, 720), (720, 480), (512, 512)]
    assert nearest_bucket(1080, 1920, buckets) == 0
    assert nearest_bucket(1920, 1080, buckets) == 1
    assert nearest_bucket(600, 640, buckets) == 2


@pytest.mark.parametrize("drop_last", [False, True])
def test_bucket_batch_sampler(drop_last):
    buckets = [i % 3 for i in range(23)] + [3]  # buckets of 8, 8, 7 and 1 samples
    sampler = BucketBatchSampler(buckets=buckets, batch_size=3, shuffle=True, drop_last=drop_last, seed=1)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(len({buckets[i] for i in b}) == 1 for b in batches)  # every batch in one bucket
        seen = [i for b in batches for i in b]
        assert len(seen) == len(set(seen))  # nothing twice
        if drop_last:
            assert all(len(b) == 3 for b in batches) and len(seen) == 6 + 6 + 6
        else:
            assert sorted(seen) == list(range(len(buckets)))  # all samples covered once per epoch
        epochs.append(batches)
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]  # ...deterministically
    ordered = BucketBatchSampler(buckets=buckets, batch_size=3, shuffle=False, drop_last=False)
    assert [i for b in ordered for i in b] == sorted(range(24), key=lambda i: (buckets[i], i))


def test_data_check_validates_conditioning_images(tmp_path, sample_data_dir):
    """Image-to-video datasets: an image missing, outside the root or undecodable is an error naming the row."""
    import json
    import shutil

    from PIL import Image

    from workbench.data.check import check_dataset

    root = tmp_path / "d"
    shutil.copytree(sample_data_dir, root, ignore=shutil.ignore_patterns(".workbench-cache"))
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    Image.new("RGB", (96, 64)).save(root / "ok.png")
    (root / "notes.png").write_text("not an image")
    for row, image in zip(rows, ["ok.png", "missing.png", "../up.png", "notes.png"]):
        row["image"] = image
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = check_dataset(root, 9, 8, 64, 64, decode=False, progress=False)
    codes = {i.file: i.code for i in report.errors}
    assert codes == {rows[1]["file_name"]: "missing_image", rows[2]["file_name"]: "path_outside_root",
                     rows[3]["file_name"]: "bad_image"}
