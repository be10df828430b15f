"""Fuzzing `workbench data split`'s inputs: its options, the footage folder (files that are not videos, random
manifests) and a damaged resume state. The property (tests/unit/test_fuzz.py's): success (exit 0, or 1 with the
unreadable files listed) or exit 2 with ONE ``error:`` line; never a traceback. argparse's own refusals (a word
where a number goes) exit 2 through SystemExit, as for every command."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.footage import make_footage
from tests.unit.test_fuzz import fuzz
from workbench.cli import main

OPTION_CASES = 20   # option lists against a small folder of footage
FOLDER_CASES = 12   # random files and manifests in the footage folder
STATE_CASES = 8     # random bytes as OUT/split.json

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([0.0, -1.0, 1e-9, 0.25, 1.0, 1e6, math.nan, math.inf]))


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-footage")
    make_footage(root / "a.mp4", [("shot", 1.5), ("shot", 1.5)], fps=8, height=32, width=48)
    return root


def _run(args, capsys) -> int:
    try:
        rc = main(args)
    except SystemExit as e:  # argparse: a value of the wrong type
        assert e.code == 2
        capsys.readouterr()
        return 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    if rc == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    else:
        assert rc in (0, 1) and "manifest:" in captured.out
    return rc


OPTIONS = {"--margin": numbers, "--stride": numbers, "--fps": numbers, "--min-motion": numbers,
           "--max-underexposed": numbers, "--max-border": numbers, "--gradual-threshold": numbers,
           "--gradual-window": st.sampled_from([0.1, 0.5, -1.0, math.nan, 1e9]),
           "--cut-threshold": numbers, "--min-shot": numbers,
           "--num-frames": st.integers(-3, 40), "--max-clips-per-shot": st.integers(-2, 5),
           "--jobs": st.integers(-1, 2), "--analysis-width": st.sampled_from([-1, 0, 15, 16, 64, 5000]),
           "--duplicate-distance": st.integers(-1, 70)}


@given(chosen=st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.just(None), max_size=5), data=st.data(),
       flags=st.lists(st.sampled_from(["--drop-duplicates", "--export-clips"]), unique=True))
@fuzz(OPTION_CASES)
def test_options(footage, tmp_path_factory, capsys, chosen, data, flags):
    args = ["data", "split", str(footage), str(tmp_path_factory.mktemp("out")), "--num-frames", "5", "--fps", "8"]
    for name in chosen:
        args += [name, str(data.draw(OPTIONS[name], label=name))]
    _run(args + flags, capsys)


files = st.lists(st.tuples(st.sampled_from(["x.mp4", "y.mov", "sub/z.mkv", "metadata.jsonl", "metadata.csv",
                                            "prompts.txt", "videos.txt", ".hidden.mp4"]),
                           st.one_of(st.binary(max_size=200),
                                     st.lists(st.fixed_dictionaries({"file_name": st.sampled_from(
                                         ["a.mp4", "../a.mp4", "/etc/passwd", "nope.mp4", "", "a.mp4\x00"]),
                                         "caption": st.text(max_size=20)}), max_size=3).map(
                                         lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()))),
                 max_size=4)


@given(extra=files)
@fuzz(FOLDER_CASES)
def test_footage_folders(footage, tmp_path_factory, capsys, extra):
    src = tmp_path_factory.mktemp("src")
    (src / "a.mp4").write_bytes((footage / "a.mp4").read_bytes())
    for name, content in extra:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(content)
    _run(["data", "split", str(src), str(tmp_path_factory.mktemp("out")), "--num-frames", "5", "--fps", "8",
          "--jobs", "1"], capsys)


@given(state=st.one_of(st.binary(max_size=300), st.dictionaries(st.text(max_size=8), st.integers()).map(
    lambda d: json.dumps(d).encode()), st.just(b'{"footage_root": 3, "fingerprint": [], "sources": 7}')))
@fuzz(STATE_CASES)
def test_damaged_resume_state(footage, tmp_path_factory, capsys, state):
    out = tmp_path_factory.mktemp("out")
    (out / "split.json").write_bytes(state)
    assert _run(["data", "split", str(footage), str(out), "--num-frames", "5", "--fps", "8", "--jobs", "1"],
                capsys) == 0


PATH_CASES = 15  # odd SRC and OUT names: NUL bytes, surrogates, long, a file where a folder goes


@given(src=st.one_of(st.just(None), st.text(max_size=40)), out=st.one_of(st.text(max_size=300),
                                                                           st.sampled_from(["a.mp4", ".", ""])))
@fuzz(PATH_CASES)
def test_paths(footage, tmp_path_factory, capsys, src, out):
    work = tmp_path_factory.mktemp("paths")
    src_path = str(footage) if src is None else str(work / src)
    out_path = str(footage / out) if out in ("a.mp4", ".") else str(work / out)
    try:
        _run(["data", "split", src_path, out_path, "--num-frames", "5", "--fps", "8", "--jobs", "1"], capsys)
    finally:
        for extra in ("metadata.jsonl", "dropped.jsonl", "split.json"):
            (footage / extra).unlink(missing_ok=True)
