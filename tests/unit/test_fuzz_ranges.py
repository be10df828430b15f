"""Fuzzing clip-range manifests (range rows: ``source``, ``start``, ``end``; split.json's ``footage_root``), in the
style and with the property of tests/unit/test_fuzz.py: every input ends in success or in ONE one-line UserError,
through every reader of a manifest (read_manifest, the boundary checks, the dataset, data check); well-formed
range rows read back exactly. Derandomized; the case counts are the constants below (a few seconds each)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_fuzz import CAPTIONS, JSON_VALUES, PATHS, dataset_folder, encoded, exercise_manifest, fuzz

RANGE_CASES = 40
ROUNDTRIP_CASES = 30

SECONDS = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70),
    st.sampled_from(["1.5", " 2 ", "", "soon", "1e999", "nan", "-0", "0x10", True, False]), JSON_VALUES,
)
SPLITS = st.one_of(
    st.none(),  # no split.json
    st.sampled_from([{"footage_root": "dir"}, {"footage_root": "."}, {"footage_root": "out"}, {"footage_root": ".."},
                     {"footage_root": "missing"}, {"footage_root": ""}, {"footage_root": "a\x00b"},
                     {"footage_root": "x" * 5000}, {"footage_root": 3}, {}, []]).map(json.dumps),
    st.text(max_size=40), JSON_VALUES.map(json.dumps),
)


@st.composite
def range_rows(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 5))):
        row = {}
        if draw(st.integers(0, 3)) == 0:
            row["file_name"] = draw(PATHS)
        if draw(st.integers(0, 5)):
            row["source"] = draw(PATHS) if draw(st.integers(0, 5)) else draw(JSON_VALUES)
        for name in ("start", "end"):
            if draw(st.integers(0, 6)):
                row[name] = draw(SECONDS)
        row["caption"] = draw(CAPTIONS)
        if draw(st.booleans()):
            row.update(draw(st.dictionaries(st.sampled_from(["shot", "score", "image", "extra"]), JSON_VALUES,
                                            max_size=2)))
        lines.append(json.dumps(row))
    return "\n".join(lines) + "\n"


def csv_of(text: str) -> str:
    """The jsonl rows as a metadata.csv with every column any row has (an absent value: an empty cell)."""
    import csv
    import io

    rows = [json.loads(line) for line in text.splitlines()]
    columns = sorted({k for r in rows for k in r})
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows([["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows])
    return out.getvalue()


def run_case(files: dict[str, bytes], split: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = dataset_folder(Path(tmp))
        if split is not None:
            (root / "split.json").write_text(split, errors="surrogatepass")
        exercise_manifest(root, files)


@fuzz(RANGE_CASES)
@given(st.data())
def test_range_rows_in_jsonl(data):
    text = data.draw(range_rows())
    run_case({"metadata.jsonl": data.draw(encoded(text))}, data.draw(SPLITS))


@fuzz(RANGE_CASES)
@given(st.data())
def test_range_rows_in_csv(data):
    text = csv_of(data.draw(range_rows()))
    run_case({"metadata.csv": data.draw(encoded(text))}, data.draw(SPLITS))


@fuzz(ROUNDTRIP_CASES)
@given(st.lists(st.tuples(st.sampled_from(["long.mp4", "a/b.mkv", "shot 1.mov"]),
                          st.floats(0, 1e4, allow_nan=False), st.floats(1e-3, 1e3, allow_nan=False),
                          st.text(min_size=1, max_size=20).filter(str.strip)), min_size=1, max_size=5),
       st.booleans(), st.booleans())
def test_range_rows_read_back_what_was_written(rows, as_csv, with_split):
    from workbench.data.manifest import read_manifest

    text = "".join(json.dumps({"source": s, "start": a, "end": a + d, "caption": c}) + "\n" for s, a, d, c in rows)
    rows = [(s, a, a + d, c) for s, a, d, c in rows if a < a + d]  # a + d may round back to a
    if len(rows) != text.count("\n"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = dataset_folder(Path(tmp))
        if with_split:
            (root / "split.json").write_text(json.dumps({"footage_root": "dir"}))
        name = "metadata.csv" if as_csv else "metadata.jsonl"
        (root / name).write_text(csv_of(text) if as_csv else text)
        entries = read_manifest(root)
    assert [(e.file_name, e.start, e.end) for e in entries] == [(s, a, b) for s, a, b, _ in rows]
    assert [e.caption for e in entries] == [c.replace("\r\n", "\n").strip() for *_, c in rows]
    assert all(e.base == ("dir" if with_split else None) for e in entries)
    assert [e.key for e in entries] == [f"{s}@{a:.3f}-{b:.3f}" for s, a, b, _ in rows]
