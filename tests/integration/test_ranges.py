"""Clip ranges end to end: the cache re-encodes only the entry whose range changed and refuses a stale one
(datasets/README.md, Clip ranges). `workbench fit` from a range manifest, raw and cached, is
tests/integration/test_split_fit.py (a split's manifest is one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers.clips import X264, encode, frames

ROWS = [(0.0, 1.5), (2.0, 3.5), (0.5, 2.0), (2.25, 3.9)]  # ranges of one 4 s clip (64 frames at 16 fps)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    return encode(tmp_path_factory.mktemp("footage") / "long.mp4", frames(64), "16", X264)


def range_dataset(root: Path, long_clip: Path, rows=ROWS, split: bool = True) -> Path:
    """A dataset of range rows over ``long_clip``, kept in a footage folder beside it (split.json)."""
    (root / "footage").mkdir(parents=True, exist_ok=True)
    shutil.copy(long_clip, root / "footage" / "long.mp4")
    data = root / "data"
    data.mkdir(exist_ok=True)
    (data / "split.json").write_text(json.dumps({"footage_root": "../footage"}))
    (data / "metadata.jsonl").write_text("".join(
        json.dumps({"source": "long.mp4", "start": a, "end": b, "caption": f"shot {i}", "shot": i}) + "\n"
        for i, (a, b) in enumerate(rows)))
    return data


def test_the_cache_re_encodes_only_the_entry_whose_range_changed(tmp_path, tiny_model_dir, long_clip):
    from workbench.data.cache import CacheError, check_ranges, read_index
    from workbench.data.manifest import read_manifest
    from workbench.data.prepare import prepare_cache
    from workbench.model.families import family_of_model

    data = range_dataset(tmp_path, long_clip, ROWS[:2])
    cache = tmp_path / "cache"
    settings = dict(num_frames=9, height=64, width=64, fps=8, device="cpu", dtype="fp32", progress=False)
    index = prepare_cache(str(tiny_model_dir), data, cache, **settings, family=family_of_model(str(tiny_model_dir)))
    assert index["complete"] and [e["key"] for e in index["entries"]] == ["long.mp4@0.000-1.500",
                                                                          "long.mp4@2.000-3.500"]
    shards = sorted((cache / "shards").glob("*.safetensors"))
    before = [(p.read_bytes(), p.stat().st_mtime_ns) for p in shards]
    assert before[0][0] != before[1][0]  # two ranges, two samples

    range_dataset(tmp_path, long_clip, [ROWS[0], (1.0, 2.5)])  # the second row's range moves
    with pytest.raises(CacheError, match=r"1 manifest rows name another clip range .*metadata.jsonl:2: "
                                         r"long.mp4@1.000-2.500, cached long.mp4@2.000-3.500"):
        check_ranges(cache, read_index(cache), read_manifest(data))
    index = prepare_cache(str(tiny_model_dir), data, cache, **settings, family=family_of_model(str(tiny_model_dir)))
    after = [(p.read_bytes(), p.stat().st_mtime_ns) for p in shards]
    assert after[0] == before[0]  # untouched
    assert after[1][0] != before[1][0]  # encoded again
    assert [e["key"] for e in index["entries"]] == ["long.mp4@0.000-1.500", "long.mp4@1.000-2.500"]
    check_ranges(cache, read_index(cache), read_manifest(data))
