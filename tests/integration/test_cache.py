"""`workbench prepare` and training from the latent cache."""

import json
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import fit_args, only_run, run_cli

pytestmark = pytest.mark.slow

DATA = ["--num-frames", "9", "--height", "64", "--width", "64", "--fps", "8", "--dtype", "fp32"]


def _prepare(model, root, cache, cwd, *extra, check=True):
    return run_cli(["prepare", "--model", str(model), "--root", str(root), "--cache", str(cache), *DATA, *extra],
                   cwd=cwd, check=check)


def _train_losses(workdir, model, data, *extra):
    run_cli(fit_args(model, data, "--trainer.max_steps", "6", *extra), cwd=workdir)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    run = only_run(uri)
    client = mlflow.MlflowClient(uri)
    train = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)]
    val = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val/loss"), key=lambda m: m.step)]
    return train, val


def test_cache_training_matches_raw_video(tmp_path, tiny_model_dir, sample_data_dir):
    cache = tmp_path / "cache"
    _prepare(tiny_model_dir, sample_data_dir, cache, tmp_path)
    index = json.loads((cache / "index.json").read_text())
    assert index["complete"] and index["num_entries"] == 8 and len(index["entries"]) == 8

    common = ["--trainer.log_every_n_steps", "1", "--model.caption_dropout", "0.3"]
    (tmp_path / "raw").mkdir()
    (tmp_path / "cached").mkdir()
    raw_train, raw_val = _train_losses(tmp_path / "raw", tiny_model_dir, sample_data_dir, *common)
    cache_train, cache_val = _train_losses(tmp_path / "cached", tiny_model_dir, sample_data_dir, *common,
                                           "--data.cache", str(cache), "--model.encoders", "offload")
    assert len(raw_train) == len(cache_train) == 6
    # Same seed, same draws: the losses agree to float32 rounding of the batched vs per-clip encode.
    torch.testing.assert_close(torch.tensor(cache_train), torch.tensor(raw_train), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(cache_val), torch.tensor(raw_val), rtol=1e-4, atol=1e-5)


def test_kill_during_prepare_then_resume(tmp_path, tiny_model_dir):
    from workbench.shapes.sample_dataset import make_sample_dataset

    data = make_sample_dataset(tmp_path / "data", num_clips=24)
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "workbench.cli", "prepare", "--model", str(tiny_model_dir), "--root", str(data),
           "--cache", str(cache), *DATA]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((cache / "shards").glob("*.safetensors"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list((cache / "shards").glob("*.safetensors")))
    assert 3 <= done_before < 24, "the kill should land mid-way"
    assert not json.loads((cache / "index.json").read_text())["complete"]
    # An incomplete cache is refused for training.
    from workbench.data.cache import CacheError, CachedLatentDataset

    with pytest.raises(CacheError, match="incomplete"):
        CachedLatentDataset(cache)

    proc = _prepare(tiny_model_dir, data, cache, tmp_path)
    assert "24/24 samples" in proc.stdout
    ds = CachedLatentDataset(cache)
    assert len(ds) == 24
    for i in range(24):  # every shard loads and has the right shapes
        s = ds[i]
        assert s["latent_dist"].shape == (8, 3, 8, 8) and s["prompt_embeds"].shape == (32, 32)
        assert torch.isfinite(s["latent_dist"]).all()
    assert not list((cache / "shards").glob(".*tmp"))  # no half-written shard left behind
    # The shards written before the kill equal freshly encoded ones.
    fresh = tmp_path / "fresh"
    _prepare(tiny_model_dir, data, fresh, tmp_path, "--num-shards", "1")
    for shard in sorted((cache / "shards").glob("*.safetensors"))[:done_before]:
        a, b = load_file(shard), load_file(fresh / "shards" / shard.name)
        torch.testing.assert_close(a["latent_dist"], b["latent_dist"], rtol=0, atol=1e-6)


def test_stale_cache_is_refused(tmp_path, tiny_model_dir, sample_data_dir):
    from workbench.model.tiny import save_tiny_model

    cache = tmp_path / "cache"
    _prepare(tiny_model_dir, sample_data_dir, cache, tmp_path)
    # another resolution
    proc = run_cli(fit_args(tiny_model_dir, sample_data_dir, "--data.cache", str(cache), "--data.height", "48",
                            "--data.width", "48", "--model.encoders", "offload"), cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "cache was made for other settings" in proc.stderr and "height: cache has 64, run needs 48" in proc.stderr
    # another model
    other = save_tiny_model(tmp_path / "other-model", seed=1)
    proc = run_cli(fit_args(other, sample_data_dir, "--data.cache", str(cache), "--model.encoders", "offload"),
                   cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "model: cache has" in proc.stderr
    # and prepare refuses to add to it with other settings
    proc = _prepare(tiny_model_dir, sample_data_dir, cache, tmp_path, "--fps", "4", check=False)
    assert proc.returncode == 2 and "fps: cache has 8.0, run needs 4.0" in proc.stderr


@pytest.fixture(scope="module")
def bucketed_data(tmp_path_factory):
    """Landscape, portrait and square clips of the shapes world, 4 of each, in one dataset folder."""
    from workbench.shapes.sample_dataset import write_shapes_dataset
    from workbench.shapes.world import SceneSampler

    data = tmp_path_factory.mktemp("buckets")
    rows = []
    for i, (h, w) in enumerate(((64, 96), (96, 64), (64, 64))):
        part = write_shapes_dataset(data / f"part{i}", SceneSampler(seed=i).scenes(4), num_frames=12, fps=8,
                                    height=h, width=w)
        rows += [{**json.loads(line), "file_name": f"part{i}/{json.loads(line)['file_name']}"}
                 for line in (part / "metadata.jsonl").read_text().splitlines()]
    (data / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return data


BUCKETS = ["--data.buckets", "[[64, 96], [96, 64], [64, 64]]", "--data.batch_size", "2", "--data.val_samples", "4"]


def test_prepare_then_fit_encodes_nothing_twice(tmp_path, tiny_model_dir, bucketed_data):
    """`prepare --cache auto` and `fit --data.cache auto` use one key (fps typed 8 or 8.0 alike): fit finds the
    cache complete and encodes nothing."""
    run_cli(["prepare", "--model", str(tiny_model_dir), "--root", str(bucketed_data), "--cache", "auto",
             "--num-frames", "9", "--height", "64", "--width", "64", "--fps", "8",
             "--buckets", "64x96,96x64,64x64"], cwd=tmp_path)
    (cache,) = (bucketed_data / ".workbench-cache").iterdir()
    shards = {p.name: p.stat().st_mtime_ns for p in (cache / "shards").iterdir()}
    index = json.loads((cache / "index.json").read_text())
    assert index["complete"] and sorted({tuple(e["size"]) for e in index["entries"]}) == [(64, 64), (64, 96),
                                                                                          (96, 64)]
    proc = run_cli(fit_args(tiny_model_dir, bucketed_data, "--trainer.max_steps", "2", "--data.cache", "auto",
                            "--model.encoders", "offload", *BUCKETS), cwd=tmp_path)
    assert "encoding" not in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (cache / "shards").iterdir()} == shards
    assert list((bucketed_data / ".workbench-cache").iterdir()) == [cache]


def test_bucketed_cache_training_equals_bucketed_raw_training(tmp_path, tiny_model_dir, bucketed_data):
    common = ["--trainer.log_every_n_steps", "1", *BUCKETS]
    (tmp_path / "raw").mkdir()
    (tmp_path / "cached").mkdir()
    raw_train, raw_val = _train_losses(tmp_path / "raw", tiny_model_dir, bucketed_data, *common)
    cache_train, cache_val = _train_losses(tmp_path / "cached", tiny_model_dir, bucketed_data, *common,
                                           "--data.cache", "auto", "--model.encoders", "offload")
    assert len(raw_train) == len(cache_train) == 6
    torch.testing.assert_close(torch.tensor(cache_train), torch.tensor(raw_train), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(cache_val), torch.tensor(raw_val), rtol=1e-4, atol=1e-5)


def test_resume_with_buckets_is_exact(tmp_path, tiny_model_dir, bucketed_data):
    """A run resumed mid-epoch from its step-3 checkpoint ends with the weights of the uninterrupted run."""
    common = ["--data.cache", "auto", "--model.encoders", "offload", *BUCKETS]
    for name in ("whole", "resumed"):
        (tmp_path / name).mkdir()
    run_cli(fit_args(tiny_model_dir, bucketed_data, "--trainer.max_steps", "5", *common), cwd=tmp_path / "whole")
    run_cli(fit_args(tiny_model_dir, bucketed_data, "--trainer.max_steps", "3", *common), cwd=tmp_path / "resumed")
    (first,) = (tmp_path / "resumed" / "runs").glob("*/checkpoints/last.ckpt")
    run_cli(fit_args(tiny_model_dir, bucketed_data, "--trainer.max_steps", "5", "--ckpt_path", str(first), *common),
            cwd=tmp_path / "resumed")
    whole = torch.load(next((tmp_path / "whole" / "runs").glob("*/checkpoints/last.ckpt")), weights_only=True)
    resumed = torch.load(first, weights_only=True)
    assert whole["global_step"] == resumed["global_step"] == 5
    for key, value in whole["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0)


def test_a_corrupted_or_truncated_shard_is_named_with_the_fix(tmp_path, tiny_model_dir, sample_data_dir):
    """Each shard's sha256 is recorded when it is written and checked when it is read: a flipped byte (which
    would otherwise train on a wrong latent) and a truncated copy each end in one line naming the shard; once
    it is deleted, prepare encodes only that shard again and the cache reads clean."""
    from workbench.data.cache import CacheError, CachedLatentDataset

    cache = tmp_path / "cache"
    _prepare(tiny_model_dir, sample_data_dir, cache, tmp_path)
    index = json.loads((cache / "index.json").read_text())
    assert all(len(e["sha256"]) == 64 for e in index["entries"])
    flipped, truncated = cache / "shards" / "000002.safetensors", cache / "shards" / "000005.safetensors"
    data = bytearray(flipped.read_bytes())
    data[-3] ^= 0x01  # one bit of a tensor's payload: the file still parses
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    ds = CachedLatentDataset(cache)
    ds[0]
    with pytest.raises(CacheError, match=r"000002.safetensors: cache shard is corrupted .*delete it and re-run"):
        ds[2]
    with pytest.raises(CacheError, match=r"000005.safetensors: cache shard is corrupted"):
        ds[5]
    proc = run_cli(fit_args(tiny_model_dir, sample_data_dir, "--trainer.max_steps", "8", "--data.cache", str(cache),
                            "--model.encoders", "offload"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "cache shard is corrupted" in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert "Traceback" not in proc.stderr
    flipped.unlink()
    truncated.unlink()
    proc = _prepare(tiny_model_dir, sample_data_dir, cache, tmp_path)
    ds = CachedLatentDataset(cache)
    assert all(torch.isfinite(ds[i]["latent_dist"]).all() for i in range(len(ds)))
