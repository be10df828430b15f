"""``workbench data caption``: a tiny random Qwen2.5-VL (the real class, loaded with from_pretrained from the
released layout) fills missing captions, leaves the user's alone, resumes after a kill, and answers a user's
mistake in one line. No caption quality is claimed: the captioner's weights are random."""

from __future__ import annotations

import contextlib
import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from workbench.common import FolderBusy, folder_lock
from workbench.curate.caption import caption_dataset
from workbench.curate.tiny_captioner import save_tiny_captioner
from workbench.shapes.sample_dataset import make_sample_dataset

MINIATURE = Path(__file__).resolve().parents[2] / "workbench" / "shapes" / "weights" / "miniature"
FAST = ["--frames", "4", "--max-side", "56", "--max-new-tokens", "12", "--model", str(MINIATURE)]


@pytest.fixture(scope="module")
def captioner(tmp_path_factory) -> Path:
    return save_tiny_captioner(tmp_path_factory.mktemp("captioner") / "tiny-qwen2.5-vl")


def _dataset(path: Path, clips: int, uncaptioned: tuple[int, ...]) -> Path:
    make_sample_dataset(path, num_clips=clips, num_frames=9, height=64, width=96)
    manifest = path / "metadata.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for i in uncaptioned:
        if i % 2:
            rows[i]["caption"] = ""
        else:
            del rows[i]["caption"]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_fills_missing_captions_and_leaves_user_captions(tmp_path, captioner):
    root = _dataset(tmp_path / "data", 3, uncaptioned=(0, 1))
    before = _rows(root)
    proc = run_cli(["data", "caption", str(root), "--captioner", str(captioner), "--prefix", "sks,",
                    "--max-text-len", "8", *FAST], cwd=tmp_path)
    after = _rows(root)
    assert [r["file_name"] for r in after] == [r["file_name"] for r in before]
    for row in after[:2]:
        assert row["caption"].startswith("sks, ") and len(row["caption"]) > 5
        assert row["caption_source"] == str(captioner)
    assert after[2] == before[2]  # the user's caption, untouched
    assert (root / "metadata.jsonl.orig").read_text() == "".join(json.dumps(r) + "\n" for r in before)
    assert "captioned 2 clips, kept 1 existing captions" in proc.stdout.splitlines()[-2]
    assert "over 8 T5 tokens" in proc.stdout  # the over-long captions, listed in the summary
    assert proc.stderr.count("warning:") == 1 and "Traceback" not in proc.stderr

    again, _ = caption_dataset(root, str(captioner), model=str(MINIATURE), progress=False)
    assert _rows(root) == after and not again.captioned and again.skipped == 3


@pytest.mark.slow
def test_resumes_after_a_kill(tmp_path, captioner):
    root = _dataset(tmp_path / "data", 6, uncaptioned=(0, 1, 2, 4, 5))
    user = _rows(root)[3]
    args = [sys.executable, "-m", "workbench.cli", "data", "caption", str(root), "--captioner", str(captioner),
            "--batch-size", "1", *FAST[:-4], "--max-new-tokens", "40", "--model", str(MINIATURE)]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first: dict = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            rows = _rows(root)  # valid JSON at every moment
            first = {r["file_name"]: r["caption"] for r in rows if "caption_source" in r}
            if first:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
        proc.stderr.close()
    killed = _rows(root)
    done = [r for r in killed if "caption_source" in r]
    assert 1 <= len(done) < 5, "killed after its first caption, before its last"

    resumed = run_cli(["data", "caption", str(root), "--captioner", str(captioner), *FAST], cwd=tmp_path)
    rows = _rows(root)
    assert all(r["caption"] for r in rows)
    assert rows[3] == user
    for r in done:  # captions written before the kill are kept, not redone
        assert next(x for x in rows if x["file_name"] == r["file_name"]) == r
    assert f"captioned {5 - len(done)} clips, kept {1 + len(done)}" in resumed.stdout


def test_overwrite_and_other_layouts(tmp_path, captioner):
    # --overwrite replaces every caption, the user's too
    root = _dataset(tmp_path / "jsonl", 2, uncaptioned=())
    summary, _ = caption_dataset(root, str(captioner), overwrite=True, frames=2, max_side=56, max_new_tokens=8,
                                 model=str(MINIATURE), progress=False)
    assert len(summary.captioned) == 2 and all(r["caption_source"] == str(captioner) for r in _rows(root))

    # metadata.csv: columns kept, caption and caption_source filled
    data = tmp_path / "csv"
    make_sample_dataset(data, num_clips=2, num_frames=9, height=64, width=96)
    rows = _rows(data)
    (data / "metadata.jsonl").unlink()
    with open(data / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption", "notes"])
        w.writerow([rows[0]["file_name"], "", "x, y"])
        w.writerow([rows[1]["file_name"], "mine", ""])
    caption_dataset(data, str(captioner), frames=2, max_side=56, max_new_tokens=8, model=str(MINIATURE),
                    progress=False)
    table = list(csv.DictReader(open(data / "metadata.csv", newline="")))
    assert list(table[0]) == ["file_name", "caption", "notes", "caption_source"]
    assert table[0]["caption"] and table[0]["notes"] == "x, y" and table[1]["caption"] == "mine"

    # prompts.txt + videos.txt: the empty line filled, the others kept
    (data / "metadata.csv").unlink()
    (data / "videos.txt").write_text(f"{rows[0]['file_name']}\n{rows[1]['file_name']}\n")
    (data / "prompts.txt").write_text("my own prompt\n\n")
    caption_dataset(data, str(captioner), frames=2, max_side=56, max_new_tokens=8, model=str(MINIATURE),
                    progress=False)
    prompts = (data / "prompts.txt").read_text().split("\n")
    assert prompts[0] == "my own prompt" and prompts[1] and len(prompts) == 3


@pytest.mark.parametrize("case", ["no_root", "no_manifest", "not_a_model", "not_a_captioner", "bad_option", "busy"])
def test_user_mistakes_are_one_line(tmp_path, case):
    root = tmp_path / "data"
    root.mkdir()
    (root / "metadata.jsonl").write_text('{"file_name": "a.mp4"}\n')
    captioner = tmp_path / "model"
    captioner.mkdir()
    args = {"no_root": [str(tmp_path / "nope")], "no_manifest": [str(tmp_path / "model")],
            "not_a_model": [str(root), "--captioner", str(captioner)],
            "not_a_captioner": [str(root), "--captioner", str(MINIATURE / "transformer")],
            "bad_option": [str(root), "--batch-size", "0"], "busy": [str(root)]}[case]
    with contextlib.ExitStack() as stack:
        if case == "busy":  # another `data caption` on this dataset holds it (the lock dies with that process)
            stack.enter_context(folder_lock(root, "held by the test"))
        proc = run_cli(["data", "caption", *args], cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    if case == "busy":
        assert "another `workbench data caption` is writing" in lines[0]


def test_folder_lock_is_exclusive_and_released(tmp_path):
    """The one folder lock (`eval --out`, `data caption`): a second holder is refused at once, in one message."""
    with folder_lock(tmp_path, "first"):
        with pytest.raises(FolderBusy, match="busy here"):
            with folder_lock(tmp_path, "busy here"):
                pass
    with folder_lock(tmp_path, "released"):  # free again once the block ended
        pass
