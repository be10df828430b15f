"""A `workbench data split` manifest trains through `workbench fit` on the tiny model, from the footage (range rows
read straight from the source) and from the latent cache `workbench prepare` builds of it."""

import json

import pytest

from tests.conftest import fit_args, run_cli
from tests.helpers.footage import make_footage

pytestmark = pytest.mark.slow

DATA = ["--data.num_frames", "9", "--data.height", "64", "--data.width", "64", "--data.fps", "8"]


@pytest.fixture(scope="module")
def split_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("split-fit")
    footage = root / "footage"
    make_footage(footage / "reel.mp4", [("shot", 2.5)] * 4, fps=16, seed=11)
    (footage / "metadata.jsonl").write_text(json.dumps({"file_name": "reel.mp4", "caption": "a moving texture"}) + "\n")
    out = root / "split"
    run_cli(["data", "split", str(footage), str(out), "--num-frames", "9", "--fps", "8", "--jobs", "1"], cwd=root)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all("file_name" not in r and r["caption"] for r in rows)
    return out


def test_split_trains_raw_and_cached(split_data, tiny_model_dir, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    run_cli(fit_args(tiny_model_dir, split_data, *DATA, "--trainer.max_steps", "2"), cwd=raw)
    assert list((raw / "runs").rglob("last.ckpt"))
    cache = tmp_path / "cache"
    run_cli(["prepare", "--model", str(tiny_model_dir), "--root", str(split_data), "--cache", str(cache),
             "--num-frames", "9", "--height", "64", "--width", "64", "--fps", "8", "--dtype", "fp32"], cwd=tmp_path)
    index = json.loads((cache / "index.json").read_text())
    assert index["complete"] and index["num_entries"] == 6
    # ranges of one source are samples of their own: one shard per range, keyed by its range
    assert len({e["key"] for e in index["entries"]}) == 6 and all("@" in e["key"] for e in index["entries"])
    cached = tmp_path / "cached"
    cached.mkdir()
    run_cli(fit_args(tiny_model_dir, split_data, *DATA, "--trainer.max_steps", "2", "--data.cache", str(cache),
                     "--model.encoders", "offload"), cwd=cached)
    assert list((cached / "runs").rglob("last.ckpt"))
