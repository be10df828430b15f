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
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
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
def user_error_or_success(what: str = ""):
    """The property around one call: success, or a UserError of one line (``--hypothesis-show-statistics`` counts
    each outcome by ``what``)."""
    try:
        yield
    except UserError as e:
        assert_user_error(e)
        event(f"{what} {type(e).__name__}")
    else:
        event(f"{what} ok")


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
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "shift_jis"])


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
    """``text`` as UTF-8 two times in three (so most cases get past decoding), else in another encoding (or with a
    byte-order mark) and maybe corrupted."""
    if draw(st.integers(0, 2)):
        return text.encode("utf-8", errors="replace")
    return draw(corrupt(text.encode(draw(ENCODINGS), errors="replace")))


@st.composite
def jsonl_lines(draw) -> str:
    lines = []
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3, 4, 5, 6]))):
        kind = draw(st.integers(0, 30))
        if kind >= 9:  # an object with the fields, of any type, and extras
            row = {}
            if draw(st.integers(0, 9)):
                row["file_name"] = draw(PATHS) if draw(st.integers(0, 5)) else draw(JSON_VALUES)
            if draw(st.integers(0, 4)):
                row["caption"] = draw(CAPTIONS) if draw(st.integers(0, 5)) else draw(JSON_VALUES)
            if draw(st.booleans()):
                row["image"] = draw(PATHS | JSON_VALUES)
            row.update(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2)))
            line = json.dumps(row, ensure_ascii=draw(st.booleans()))
            if draw(st.integers(0, 4)) == 0 and row:  # a duplicate key: the last one wins
                line = line[:-1] + f', "file_name": {json.dumps(draw(PATHS))}}}'
        elif kind in (6, 7):
            line = draw(st.sampled_from(["", "   "]))  # blank lines are skipped
        elif kind == 5:
            line = json.dumps(draw(JSON_VALUES))  # a JSON value that is not an object
        elif kind == 4:
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
    if draw(st.integers(0, 3)):
        columns.insert(draw(st.integers(0, len(columns))), "file_name")
    rows = [draw(st.lists(PATHS | CAPTIONS.map(lambda c: "" if c is None else c), max_size=len(columns) + 2))
            for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3, 4, 5])))]
    out = io.StringIO(newline="")
    if draw(st.integers(0, 2)):
        writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
        writer.writerow(columns)
        writer.writerows(rows)
    else:  # written by hand: unbalanced quotes, stray or other separators, a missing line end
        separator = draw(st.sampled_from([",", ",", ";", "\t"]))
        for row in [columns, *rows]:
            out.write(separator.join(row) + draw(st.sampled_from(["\n", "\n", "\r\n", "\r", ""])))
    return out.getvalue()


@st.composite
def txt_lines(draw, values) -> str:
    lines = draw(st.lists(values, min_size=draw(st.sampled_from([0, 1, 1, 1])), max_size=6))
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
    with user_error_or_success("read_manifest"):
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


# -- suites ----------------------------------------------------------------------------------------------

SUITES = sorted((REPO / "evals" / "suites").glob("*.yaml"))
YAML_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(-3, 100), st.floats(),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
    st.sampled_from(["", " ", "~", "/", "..", "../../x", "/nonexistent/x.pt", "a\x00b", "./local", "THUDM/CogVideoX-2b",
                     "first-block-cache:0.1", "pab:3", "pab:1", "faster-cache", "faster-cache:2", "dpm", "ddim", "i3d",
                     "videomae", "stylegan-v", "workbench", "shapes", "0.95", "49", "1e400", "-1"]),
)
YAML_VALUES = st.recursive(YAML_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3)),
    max_leaves=6)


def typo(key: str, draw) -> str:
    """``key`` with one character dropped, doubled or changed (``num_frame``, ``seedss``, ``widht``)."""
    i = draw(st.integers(0, max(0, len(key) - 1)))
    return draw(st.sampled_from([key[:i] + key[i + 1:], key[:i] + key[i:i + 1] * 2 + key[i + 1:],
                                 key[:i] + draw(st.characters(min_codepoint=97, max_codepoint=122)) + key[i + 1:],
                                 key.upper(), key.replace("_", "-")]))


def near(value, draw):
    """A value of ``value``'s type, often out of range (huge, negative, zero, off by one)."""
    if isinstance(value, bool):
        return draw(st.booleans())
    if isinstance(value, int):
        return draw(st.sampled_from([value - 1, value + 1, 0, -value, value * 10**6, 2**63, 10**30]) | st.integers())
    if isinstance(value, float):
        return draw(st.floats() | st.sampled_from([value * 2, -value, 0.0, 1.0]))
    if isinstance(value, str):
        return draw(st.sampled_from([value + "x", value[:-1], value.upper(), "", "/" + value, "../" + value]) | TEXT)
    if isinstance(value, list):
        return draw(st.lists(st.sampled_from(value) if value else YAML_SCALARS, max_size=len(value) + 2))
    return draw(YAML_VALUES)


@st.composite
def mutated_suite(draw) -> dict:
    data = yaml.safe_load(draw(st.sampled_from(SUITES)).read_text())
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3]))):
        key = draw(st.sampled_from(sorted(data, key=str))) if data else "name"
        op = draw(st.sampled_from(["delete", "near", "near", "value", "value", "typo", "unknown", "prompts", "seeds"]))
        if op == "delete":
            data.pop(key, None)
        elif op == "near":
            data[key] = near(data.get(key), draw)
        elif op == "value":
            data[key] = draw(YAML_VALUES)
        elif op == "typo" and isinstance(key, str):
            data[typo(key, draw)] = data.pop(key)
        elif op == "unknown":
            odd_key = st.text(max_size=8) | st.integers() | st.none() | st.booleans() | st.floats()
            data[draw(odd_key)] = draw(YAML_VALUES)
        elif op == "prompts":
            data["prompts"] = draw(st.lists(YAML_SCALARS | CAPTIONS, max_size=4))
        else:
            data["seeds"] = draw(st.lists(YAML_SCALARS, max_size=4) | YAML_SCALARS)
    return data


def exercise_suite(path: Path, approximate: str | None) -> None:
    from workbench.eval.suite import load_suite

    with user_error_or_success("load_suite"):
        suite = load_suite(path)
        suite.settings()
        suite.jobs()
        suite.with_overrides(approximate=approximate, reference=str(path.parent), fvd_detector=str(path))


def suite_case(text_or_bytes, files: dict[str, bytes], approximate) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "suites"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        path = folder / "suite.yaml"
        path.write_bytes(text_or_bytes if isinstance(text_or_bytes, bytes) else text_or_bytes.encode())
        exercise_suite(path, approximate)


@fuzz(SUITE_CASES)
@given(st.data())
def test_mutated_suites(data):
    suite = data.draw(mutated_suite())
    files = {}
    if data.draw(st.integers(0, 4)) == 0:  # prompts from a file of any bytes
        files["prompts.txt"] = data.draw(encoded(data.draw(txt_lines(CAPTIONS.map(lambda c: c or "")))))
        suite["prompts_file"] = data.draw(st.sampled_from(["prompts.txt", "./prompts.txt", ".", "missing.txt"]))
    text = yaml.safe_dump(suite, allow_unicode=data.draw(st.booleans()), sort_keys=False)
    raw = data.draw(encoded(text)) if data.draw(st.integers(0, 5)) == 0 else text
    suite_case(raw, files, data.draw(st.none() | YAML_SCALARS))


@fuzz(RAW_SUITE_CASES)
@given(st.one_of(st.binary(max_size=500), st.text(max_size=300),
                 st.sampled_from(["[" * 5000, "a: &a [*a]", "- !!python/object:os.system [ls]", "{a: 1, a: 2}",
                                  "name: x\n\tprompts: []", "prompts: [a, b]\nseeds: [1, 1]", "prompts:\n- a\n-\n",
                                  "? [a]\n: b", "1: a\nb: 2", "null: 1\nprompts: [a]", "%YAML 9.9\n---\n",
                                  "---\n...\n---"])))
def test_random_text_and_bytes_as_a_suite(content):
    suite_case(content, {}, None)


# -- recipes ---------------------------------------------------------------------------------------------

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
PATH_KEYS = {"root", "val_root", "cache", "report_dir", "default_root_dir", "model", "dirpath", "tracking_uri",
             "ckpt_path", "save_dir"}
BAD_PATHS = st.sampled_from(["", " ", "/nonexistent/folder", "../../../../x", "a\x00b", "~nobody/x", "/", ".",
                             "/dev/null", "x" * 5000, "d/" * 2000, "THUDM/not-a-model", "owner/name", "file:///x"])


@pytest.fixture(scope="module")
def recipe_place(tmp_path_factory, tiny_model_dir):
    """A working folder holding a one-clip dataset manifest (instantiation reads no video) and the tiny model, and
    the environment `workbench fit` runs in offline (a released model's hub id gives its family by name)."""
    work = tmp_path_factory.mktemp("recipe-fuzz")
    data = work / "data"
    data.mkdir()
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "caption": "a red circle"}) + "\n")
    with mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}):
        yield {"work": work, "data": data, "model": tiny_model_dir}


def node_paths(tree, prefix=()):
    """Every (path, value) of a nested recipe: dict keys and list items."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        yield prefix + (key,), value
        yield from node_paths(value, prefix + (key,))


def at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def recipe_base(path: Path, place: dict) -> dict:
    """A shipped recipe made runnable here: its data is the one-clip dataset, a local model is the tiny one (hub ids
    stay), GPU recipes run on the CPU. What the mutations start from."""
    recipe = yaml.safe_load(path.read_text())
    recipe["data"]["root"] = str(place["data"])
    if not str(recipe["model"]["model"]).startswith("THUDM/"):
        recipe["model"]["model"] = str(place["model"])
    trainer = recipe.setdefault("trainer", {})
    if trainer.get("accelerator") != "cpu":
        trainer.update(accelerator="cpu", devices=1)
    return recipe


@st.composite
def mutated_recipe(draw, place: dict) -> tuple[dict, list[str]]:
    """(recipe, command-line overrides): 1 to 3 mutations of a shipped recipe, the last one maybe given as an
    override (``--data.num_frames=-3``) instead of in the file."""
    recipe = recipe_base(draw(st.sampled_from(RECIPES)), place)
    overrides = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3]))):
        nodes = list(node_paths(recipe))
        path, value = draw(st.sampled_from(nodes))
        parent, key = at(recipe, path[:-1]), path[-1]
        op = draw(st.sampled_from(["delete", "near", "near", "near", "value", "value", "typo", "unknown", "path"]))
        if op == "delete":
            del parent[key]
        elif op == "typo" and isinstance(key, str):
            parent[typo(key, draw)] = parent.pop(key)
        elif op == "unknown" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["num_frame", "lr", "epochs", "gpus", "lora", "init_args", "class_path"])
                        | st.text(max_size=8))] = draw(YAML_VALUES)
        elif op == "path" or (op != "value" and isinstance(key, str) and key in PATH_KEYS and draw(st.booleans())):
            parent[key] = draw(BAD_PATHS)
        else:
            new = near(value, draw) if op == "near" else draw(YAML_VALUES)
            if (draw(st.integers(0, 3)) == 0 and all(isinstance(k, str) for k in path) and path[0] != "trainer"
                    and not isinstance(new, (dict, list))):
                text = yaml.safe_dump(new, default_flow_style=True).strip().removesuffix("...").strip()
                overrides = [f"--{'.'.join(path)}={text}"]
            else:
                parent[key] = new
    return recipe, overrides


def exercise_recipe(path: Path, overrides: list[str], work: Path) -> None:
    """``workbench fit --config PATH OVERRIDES`` up to the start of training: parse, then build the model (not its
    weights: those load in configure_model), the data module, the trainer with its callbacks, logger and plugins."""
    from workbench.train.cli import lightning_cli

    before = os.getcwd()
    os.chdir(work)
    try:
        with user_error_or_success("fit"):
            lightning_cli(["--config", str(path), *overrides], run=False)
    finally:
        os.chdir(before)


@fuzz(RECIPE_CASES)
@given(st.data())
def test_mutated_recipes(recipe_place, data):
    recipe, overrides = data.draw(mutated_recipe(recipe_place))
    path = recipe_place["work"] / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True, sort_keys=False))
    exercise_recipe(path, overrides, recipe_place["work"])


@fuzz(RAW_RECIPE_CASES)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=200),
                 st.sampled_from(["[" * 5000, "trainer: [1, 2]", "model: 3", "data:\n\troot: x", "a: &a [*a]",
                                  "!!python/object/apply:os.system [ls]", "seed_everything: 99999999999999999999",
                                  "\ufeffmodel:\n  mode: lora", "trainer: null",
                                  "trainer:\n  callbacks:\n    - class_path: os.system"])))
def test_random_text_and_bytes_as_a_recipe(recipe_place, content):
    path = recipe_place["work"] / "recipe.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    exercise_recipe(path, ["--data.root", str(recipe_place["data"]), "--model.model", str(recipe_place["model"])],
                    recipe_place["work"])
