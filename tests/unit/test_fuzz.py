"""Fuzzing the user's inputs: bad input never reaches a traceback.

Property-based tests (hypothesis) over everything a user hands the workbench as a file:

* dataset manifests, every layout workbench.data.manifest reads (``metadata.jsonl``, ``metadata.csv``,
  ``prompts.txt`` + ``videos.txt`` + ``images.txt``): random bytes, other encodings (UTF-16, latin-1, a BOM),
  NUL bytes, huge and empty captions, duplicate keys, missing and extra columns, deep, absolute and escaping
  paths, symlink loops, unicode;
* suite YAML (evals/suites/*.yaml as workbench.eval.suite.load_suite reads it), mutated and raw;
* recipe YAML (recipes/*.yaml as ``workbench fit --config`` reads it: LightningCLI's parse, then the
  instantiation of the model, data module, trainer, callbacks and logger, without loading weights or training),
  mutated: wrong types, unknown keys, typos, deleted keys, huge and negative numbers, bad paths.

The property: every input ends in success or in ONE UserError (or a subclass: ManifestError, SuiteError,
RecipeError...) whose message is one line, which ``workbench`` prints as ``error: ...`` with exit status 2;
never another exception type. Well-formed manifests also read back exactly what was written (the
round-trip tests). The CLI end of the same property (exit 2, one ``error:`` line, no traceback) is checked
on a few of these inputs in tests/integration/test_user_mistakes.py.

Every test is derandomized (the same cases on every run, so CI is reproducible); the case counts are the
constants below.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.cli import user_message
from workbench.common import UserError

REPO = Path(__file__).resolve().parents[2]

# Cases per fuzz target (docs/reliability.md states them).
MANIFEST_CASES = 250        # per manifest layout: jsonl, csv, prompts/videos/images txt
RAW_MANIFEST_CASES = 200    # random bytes as any of the manifest files
ROUNDTRIP_CASES = 100       # per layout: a well-formed manifest reads back what was written
SUITE_CASES = 200           # mutated suites
RAW_SUITE_CASES = 100       # random text and bytes as a suite file
RECIPE_CASES = 150          # mutated recipes, parsed and instantiated
RAW_RECIPE_CASES = 30       # random text and bytes as a recipe file


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def assert_user_error(error: BaseException) -> str:
    """The property's failure branch: a UserError whose message the CLI prints as one non-empty line."""
    if not isinstance(error, UserError):
        raise AssertionError(f"{type(error).__module__}.{type(error).__name__} instead of a UserError: "
                             f"{str(error)[:500]!r}") from error
    line = user_message(error)
    assert line.strip() and len(line.splitlines()) == 1, repr(line)
    return line


@contextlib.contextmanager
def user_error_or_success():
    try:
        yield
    except UserError as e:
        assert_user_error(e)


# -- manifests -------------------------------------------------------------------------------------------

SEGMENT = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=12)
PATHS = st.one_of(
    st.sampled_from([
        "videos/a.mp4", "a.mp4", "", " ", "\t", "../a.mp4", "../../etc/passwd", "/etc/passwd", "/", ".", "..",
        "videos/../../x.mp4", "videos/./a.mp4", "C:\\videos\\a.mp4", "videos\\a.mp4", "~/a.mp4", "a\x00b.mp4",
        "loop", "loop/x.mp4", "out", "out/x.mp4", "dir", "dir/", "empty.mp4", "videos/", " a.mp4 ", "a.mp4\r",
        "%2e%2e/a.mp4", "file:///etc/passwd", "https://example.com/a.mp4", "\u202ea.mp4", "ａ.mp4", "e\u0301.mp4",
    ]),
    st.lists(SEGMENT, min_size=1, max_size=6).map("/".join),
    st.integers(50, 3000).map(lambda n: "d/" * n + "x.mp4"),          # deep
    st.integers(200, 5000).map(lambda n: "x" * n + ".mp4"),           # a name longer than NAME_MAX
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),  # anything, control characters included
)
CAPTIONS = st.one_of(
    st.none(), st.just(""), st.just("   "), st.text(st.characters(blacklist_categories=("Cs",)), max_size=80),
    st.integers(1000, 300_000).map(lambda n: "a red circle " * (n // 13)),  # huge (past csv's field limit)
    st.sampled_from(["a\x00b", "line one\nline two", "tab\there", "\ufeffbom", "\u2028sep", "caf\xe9", "\ud83c\udfa5"]),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)
ENCODINGS = st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1",
                             "cp1252", "shift_jis"])


@st.composite
def corrupt(draw, data: bytes) -> bytes:
    """``data``, maybe with random bytes (NULs, invalid UTF-8) inserted or it cut short."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.sampled_from([b"\x00", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\r", b"\n", b"\x85",
                                            b"\xe2\x80\xa8"]) | st.binary(min_size=1, max_size=4))
    if data and draw(st.integers(0, 9)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def encoded(draw, text: str) -> bytes:
    return draw(corrupt(text.encode(draw(ENCODINGS), errors="replace")))


@st.composite
def jsonl_lines(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        if kind <= 5:  # an object with the fields, of any type, and extras
            row = {}
            if draw(st.integers(0, 5)):
                row["file_name"] = draw(PATHS | JSON_VALUES)
            if draw(st.integers(0, 4)):
                row["caption"] = draw(CAPTIONS | JSON_VALUES)
            if draw(st.booleans()):
                row["image"] = draw(PATHS | JSON_VALUES)
            row.update(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2)))
            line = json.dumps(row, ensure_ascii=draw(st.booleans()))
            if draw(st.integers(0, 4)) == 0 and row:  # a duplicate key: the last one wins
                line = line[:-1] + f', "file_name": {json.dumps(draw(PATHS))}}}'
        elif kind == 6:
            line = json.dumps(draw(JSON_VALUES))  # a JSON value that is not an object
        elif kind == 7:
            line = draw(st.sampled_from(["[" * 100_000, "{\"a\":" * 50_000, "NaN", "{\"file_name\": NaN}", "{", "}",
                                         "{'file_name': 'a.mp4'}", "\x00", "   ", ""]))
        else:
            line = draw(st.text(max_size=40))
        lines.append(line)
    return draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))


@st.composite
def csv_text(draw) -> str:
    columns = draw(st.lists(st.sampled_from(["file_name", "caption", "image", " file_name ", "File_Name", "extra",
                                             "", "caption", "\ufefffile_name"]) | st.text(max_size=6), max_size=5))
    rows = [draw(st.lists(PATHS | CAPTIONS.map(lambda c: "" if c is None else c), max_size=len(columns) + 2))
            for _ in range(draw(st.integers(0, 5)))]
    out = io.StringIO(newline="")
    if draw(st.booleans()):
        writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
        writer.writerow(columns)
        writer.writerows(rows)
    else:  # written by hand: unbalanced quotes, stray separators
        for row in [columns, *rows]:
            out.write(draw(st.sampled_from([",", ";", "\t"])).join(row) + draw(st.sampled_from(["\n", "\r\n", "\r", ""])))
    return out.getvalue()


@st.composite
def txt_lines(draw, values) -> str:
    lines = draw(st.lists(values, max_size=6))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines) + draw(st.sampled_from(["", "\n"]))


def dataset_folder(base: Path) -> Path:
    """A dataset folder with the things manifests may point at: a video-less folder, an empty file, a symlink
    loop, a symlink out of the folder (no real video: nothing here reaches a decoder)."""
    root = base / "data"
    (root / "dir").mkdir(parents=True)
    (root / "videos").mkdir()
    (root / "empty.mp4").write_bytes(b"")
    os.symlink("loop", root / "loop")
    os.symlink(base, root / "out")
    return root


def exercise_manifest(root: Path, files: dict[str, bytes]) -> None:
    """Everything that reads a manifest, on ``files`` written into ``root``: the property holds for each."""
    from workbench.data.check import check_dataset
    from workbench.data.dataset import VideoCaptionDataset
    from workbench.data.manifest import Entry, read_manifest, refuse_paths_outside_root

    for name, data in files.items():
        (root / name).write_bytes(data)
    entries = None
    with user_error_or_success():
        entries = read_manifest(root)
    if entries is not None:
        assert entries and all(isinstance(e, Entry) and isinstance(e.file_name, str) for e in entries)
        assert all(e.caption is None or isinstance(e.caption, str) for e in entries)
        assert all(e.image is None or isinstance(e.image, str) for e in entries)
        for reader in ("training data", "workbench prepare"):  # datamodule, cache: before anything is decoded
            with user_error_or_success():
                refuse_paths_outside_root(entries, root, reader)
        dataset = VideoCaptionDataset(root, entries[:3], 9, 64, 64, 8.0)
        for i in range(len(dataset)):  # no real video here: each sample is a SampleError (or another UserError)
            with user_error_or_success():
                dataset.load(i)
    # data check never raises for a bad dataset: everything is in its report, which must write.
    report = check_dataset(root, 9, 8.0, 64, 64, decode=False, jobs=1, progress=False)
    assert entries is not None or not report.ok
    out = root.parent / "report"
    report.write(out)
    json.loads((out / "report.json").read_text())
    report.to_markdown(max_issues=30)


def run_manifest_case(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        exercise_manifest(dataset_folder(Path(tmp)), files)


@fuzz(MANIFEST_CASES)
@given(st.data())
def test_jsonl_manifests(data):
    text = data.draw(jsonl_lines())
    run_manifest_case({"metadata.jsonl": data.draw(encoded(text))})


@fuzz(MANIFEST_CASES)
@given(st.data())
def test_csv_manifests(data):
    run_manifest_case({"metadata.csv": data.draw(encoded(data.draw(csv_text())))})


@fuzz(MANIFEST_CASES)
@given(st.data())
def test_prompts_videos_images_manifests(data):
    files = {"videos.txt": data.draw(encoded(data.draw(txt_lines(PATHS)))),
             "prompts.txt": data.draw(encoded(data.draw(txt_lines(CAPTIONS.map(lambda c: c or "")))))}
    if data.draw(st.booleans()):
        files["images.txt"] = data.draw(encoded(data.draw(txt_lines(PATHS))))
    run_manifest_case(files)


@fuzz(RAW_MANIFEST_CASES)
@given(st.sampled_from(["metadata.jsonl", "metadata.csv", "videos.txt"]), st.binary(max_size=2000),
       st.binary(max_size=500))
def test_random_bytes_as_a_manifest(name, data, other):
    files = {name: data}
    if name == "videos.txt":
        files["prompts.txt"] = other
        files["images.txt"] = other[::-1]
    run_manifest_case(files)


# Well-formed manifests read back exactly: a caption or path with any character but a line break (for
# prompts.txt + videos.txt, where a line is an entry) is the entry's, at its line.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40)
NAME = LINE.filter(lambda s: s.strip())


def expected_caption(value: str | None) -> str | None:
    text = None if value is None else value.replace("\r\n", "\n").strip()
    return text or None


def read_back(files: dict[str, bytes]):
    from workbench.data.manifest import read_manifest

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        return [(e.file_name, e.caption, e.image) for e in read_manifest(tmp)]


@fuzz(ROUNDTRIP_CASES)
@given(st.lists(st.tuples(NAME | TEXT.filter(lambda s: s.strip()), st.none() | TEXT, st.none() | TEXT), min_size=1,
                max_size=5), st.booleans(), st.sampled_from(["utf-8", "utf-8-sig"]), st.sampled_from(["\n", "\r\n"]))
def test_jsonl_reads_back_what_was_written(rows, ascii_only, encoding, newline):
    text = newline.join(json.dumps({"file_name": f, "caption": c, "image": i}, ensure_ascii=ascii_only)
                        for f, c, i in rows) + newline
    got = read_back({"metadata.jsonl": text.encode(encoding)})
    assert got == [(f, expected_caption(c), expected_caption(i)) for f, c, i in rows]


@fuzz(ROUNDTRIP_CASES)
@given(st.lists(st.tuples(NAME.filter(lambda s: "\x00" not in s), TEXT.filter(lambda s: "\x00" not in s)),
                min_size=1, max_size=5), st.sampled_from(["utf-8", "utf-8-sig"]), st.sampled_from(["\n", "\r\n"]))
def test_csv_reads_back_what_was_written(rows, encoding, newline):
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(["file_name", "caption"])
    writer.writerows(rows)
    got = read_back({"metadata.csv": out.getvalue().encode(encoding)})
    assert got == [(f.strip(), expected_caption(c), None) for f, c in rows]


@fuzz(ROUNDTRIP_CASES)
@given(st.lists(st.tuples(NAME, LINE, LINE), min_size=1, max_size=5), st.booleans(),
       st.sampled_from(["utf-8", "utf-8-sig"]), st.sampled_from(["\n", "\r\n"]))
def test_prompts_videos_images_read_back_what_was_written(rows, images, encoding, newline):
    def lines(values):
        return (newline.join(values) + newline).encode(encoding)

    files = {"videos.txt": lines([v for v, _, _ in rows]), "prompts.txt": lines([p for _, p, _ in rows])}
    if images:
        files["images.txt"] = lines([i for _, _, i in rows])
    got = read_back(files)
    assert got == [(v.strip(), expected_caption(p), expected_caption(i) if images else None) for v, p, i in rows]
