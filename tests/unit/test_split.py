"""`workbench data split` and the shot detection under it, on generated footage with known transitions.

The footage (tests/helpers/footage.py): moving textures, one per shot, 64x96 at 16 fps; a reel with hard cuts, a
one-frame white flash inside a shot (not a cut), a 1-second dissolve and a shot shorter than a clip; a rotated
variable-frame-rate phone file; a file that is not a video. Clips are 9 frames at 8 fps (1.125 s).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.footage import make_footage, make_phone_file
from workbench.cli import main
from workbench.curate.split import ClipPlan
from workbench.data.shots import CUT, GRADUAL, detect_transitions

FPS = 16
CLIP = ["--num-frames", "9", "--fps", "8"]
LENGTH = 9 / 8
MARGIN = 0.25
REEL = [("shot", 3), ("shot", 4), ("flash", 2.0), ("dissolve", 1.0), ("shot", 3), ("shot", 0.8), ("shot", 3)]


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    root = tmp_path_factory.mktemp("footage")
    reel = make_footage(root / "reel.mp4", REEL, fps=FPS)
    phone = make_phone_file(root / "phone" / "phone.mp4")
    (root / "broken.mp4").write_bytes(b"this is not a video\n" * 10)
    return root, reel, phone


def test_transitions_are_found_and_the_flash_is_not_one(footage):
    _, reel, phone = footage
    found = detect_transitions(reel.path)
    cuts = [t.start for t in found if t.kind == CUT]
    gradual = [(t.start, t.end) for t in found if t.kind == GRADUAL]
    assert cuts == pytest.approx(reel.cuts, abs=1.5 / FPS)
    assert len(gradual) == 1
    (a, b), (true_a, true_b) = gradual[0], reel.gradual[0]
    assert a <= true_a + 1 / FPS and b >= true_b - 1 / FPS, (gradual, reel.gradual)  # covers the dissolve
    assert a >= true_a - 1.0 and b <= true_b + 1.0  # within a window of it
    assert not any(t.crosses(reel.flashes[0] - 0.2, reel.flashes[0] + 0.2) for t in found)
    # the phone file: rotated, 30 then 15 fps; its one cut on the real time axis
    assert [(t.start, t.kind) for t in detect_transitions(phone.path)] == [(pytest.approx(phone.cuts[0], abs=0.04), CUT)]
    # a window: only what lies in it
    assert [t.start for t in detect_transitions(reel.path, start=2.0, end=4.0)] == pytest.approx([3.0], abs=0.07)


def test_clip_plan_counts():
    plan = ClipPlan(9, 8, margin=0.25)
    assert plan.ranges(0, 3, at_start=False, at_end=True) == [(0.25, 1.375), (1.375, 2.5)]  # centred slack
    assert len(plan.ranges(3, 8, at_start=True, at_end=True)) == math.floor((5 - 0.5) / LENGTH)
    assert plan.ranges(0, 1.3, at_start=True, at_end=True) == []  # shorter than a clip plus its margins
    assert len(ClipPlan(9, 8, stride=0.5).ranges(0, 3, at_start=False, at_end=False)) == 4
    spread = ClipPlan(9, 8, max_clips_per_shot=2).ranges(0, 10, at_start=False, at_end=False)
    assert len(spread) == 2 and spread[0][0] < 1 and spread[1][1] > 9


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def split(footage, tmp_path_factory):
    root, reel, phone = footage
    out = tmp_path_factory.mktemp("split") / "out"
    rc = main(["data", "split", str(root), str(out), *CLIP, "--jobs", "1"])
    return out, rc


def test_split_cuts_clips_inside_shots(footage, split, capsys):
    root, reel, phone = footage
    out, rc = split
    assert rc == 1  # done, with one unreadable file
    rows = _rows(out)
    state = json.loads((out / "split.json").read_text())
    assert state["footage_root"] == str(root.resolve())
    assert state["sources"]["broken.mp4"]["error"].startswith("cannot")
    for source, truth in (("reel.mp4", reel), ("phone/phone.mp4", phone)):
        clips = [r for r in rows if r["source"] == source]
        assert clips, source
        boundaries = [(c, c) for c in truth.cuts] + list(truth.gradual)
        for r in clips:
            assert r["end"] - r["start"] == pytest.approx(LENGTH, abs=1e-6)
            for a, b in boundaries:  # no clip within the margin of a true transition
                assert r["end"] <= a - MARGIN + 1e-6 or r["start"] >= b + MARGIN - 1e-6, (r, a, b)
            for key in ("motion", "exposure", "underexposed", "overexposed", "sharpness", "borders", "dhash"):
                assert key in r
        # counts: what each detected shot holds
        record = state["sources"][source]
        for shot in record["shots"]:
            at_start, at_end = shot["start"] > 0, shot["end"] < record["duration"] - 1e-6
            usable = shot["end"] - shot["start"] - MARGIN * (at_start + at_end)
            assert shot["clips"] == max(0, math.floor(usable / LENGTH + 1e-9)), shot
        assert record["clips"] == len(clips)
    # the reel's hard-cut shots: 3 s shots hold 2 clips each; the 0.8 s shot none (reported)
    reel_shots = state["sources"]["reel.mp4"]["shots"]
    assert reel_shots[0]["clips"] == 2 and any(s["clips"] == 0 and s["end"] - s["start"] < 1 for s in reel_shots)
    # the phone file: shots of 3 s and 6 s on its real (VFR) time axis
    assert [s["clips"] for s in state["sources"]["phone/phone.mp4"]["shots"]] == [2, 5]


def test_rerun_does_no_work_and_thresholds_need_no_decoding(footage, split, monkeypatch, capsys):
    root, _, _ = footage
    out, _ = split
    before = (out / "split.json").read_text(), (out / "metadata.jsonl").read_text()

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr("workbench.curate.split.analyse", no_decoding)
    assert main(["data", "split", str(root), str(out), *CLIP, "--jobs", "1"]) == 1
    assert ((out / "split.json").read_text(), (out / "metadata.jsonl").read_text()) == before
    assert "0 split now, 3 already done" in capsys.readouterr().out
    # a threshold applies to the stored scores
    assert main(["data", "split", str(root), str(out), *CLIP, "--min-motion", "200"]) == 1
    assert _rows(out) == [] and len((out / "dropped.jsonl").read_text().splitlines()) == len(before[1].splitlines())
    assert main(["data", "split", str(root), str(out), *CLIP]) == 1
    assert (out / "metadata.jsonl").read_text() == before[1]


def test_unreadable_file_is_one_line_and_the_rest_proceeds(footage, tmp_path, capsys):
    root, _, _ = footage
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.mp4").write_bytes((root / "reel.mp4").read_bytes())
    (src / "b.mov").write_bytes(b"\x00" * 100)
    assert main(["data", "split", str(src), str(tmp_path / "out"), *CLIP, "--jobs", "2"]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "b.mov" in line]
    assert len(lines) == 1 and "Traceback" not in captured.err + captured.out
    assert "unreadable: b.mov" in captured.out
    assert {r["source"] for r in _rows(tmp_path / "out")} == {"a.mp4"}


def test_manifest_captions_and_exported_clips(footage, tmp_path):
    from workbench.data.decoding import probe

    root, reel, _ = footage
    src = tmp_path / "src"
    src.mkdir()
    (src / "take.mp4").write_bytes(reel.path.read_bytes())
    (src / "metadata.jsonl").write_text(json.dumps({"file_name": "take.mp4", "caption": "a reel"}) + "\n")
    out = tmp_path / "out"
    assert main(["data", "split", str(src), str(out), *CLIP, "--export-clips", "--max-clips-per-shot", "1"]) == 0
    rows = _rows(out)
    assert rows and all(r["caption"] == "a reel" for r in rows)
    for r in rows:
        info = probe(out / r["file_name"])
        assert info.num_frames == round(LENGTH * FPS) and info.height == 64


@pytest.mark.parametrize("args, says", [
    (["--margin", "-1"], "--margin"),
    (["--num-frames", "10"], "4k+1"),
    (["--stride", "0"], "--stride"),
    (["--fps", "nan"], "--fps"),
    (["--jobs", "0"], "--jobs"),
    (["--max-border", "2"], "--max-border"),
])
def test_bad_arguments_are_one_line(footage, tmp_path, capsys, args, says):
    root, _, _ = footage
    full = [*CLIP, *args] if "--num-frames" not in args and "--fps" not in args else (
        ["--fps", "8", *args] if "--num-frames" in args else ["--num-frames", "9", *args])
    assert main(["data", "split", str(root), str(tmp_path / "o"), *full]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and err.startswith("error:")


def test_missing_or_empty_footage_is_one_line(tmp_path, capsys):
    assert main(["data", "split", str(tmp_path / "nope"), str(tmp_path / "o"), *CLIP]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["data", "split", str(tmp_path / "empty"), str(tmp_path / "o"), *CLIP]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not found" in err[0] and "no videos" in err[1]


def test_data_check_names_the_crossed_cut_and_the_unused_footage(tmp_path):
    """The issue's 64-second reel of eight 8-second shots, shrunk: eight 2-second shots, a 9-frame clip."""
    from workbench.data.check import check_dataset

    root = tmp_path / "reel"
    make_footage(root / "reel.mp4", [("shot", 2)] * 8, fps=FPS, seed=3)
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "reel.mp4", "caption": "a reel"}) + "\n")
    report = check_dataset(root, 9, 8, 64, 96, progress=False, jobs=1)
    crossing = [i for i in report.warnings if i.code == "crosses_transition"]
    assert len(crossing) == 1 and "cut at 8.00 s" in crossing[0].message and "reel.mp4" in crossing[0].message
    assert any(n.startswith("reel.mp4: 16.0 s of video, 1.1 s used") and "workbench data split" in n
               for n in report.notes)
    assert report.summary["footage"]["crossing_samples"] == 1

    # the split of the same reel: every clip inside a shot, the file used, scores summarised
    out = tmp_path / "split"
    assert main(["data", "split", str(root), str(out), *CLIP, "--jobs", "1"]) == 0
    assert len(_rows(out)) == 8  # 2 s shots: one 1.125 s clip each (margins of 0.25 s)
    checked = check_dataset(out, 9, 8, 64, 96, progress=False, jobs=1)
    assert checked.ok and not checked.warnings, checked.to_markdown()
    assert checked.summary["footage"]["crossing_samples"] == 0
    assert set(checked.summary["quality"]) >= {"motion", "exposure", "sharpness"}
    assert "Quality scores" in checked.to_markdown()
