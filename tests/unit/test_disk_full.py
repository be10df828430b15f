"""A full disk (ENOSPC) at every writer: one line naming the path and the space needed, the last good state intact.

Each writer meets a disk that fills up partway through a write, injected at the lowest write call it makes (the
file object under ``torch.save``, ``os.write`` of the spool, the file under a cache shard, safetensors' writer as
it fails on a real full disk): checkpoints (in-process, and through ``workbench fit`` in a subprocess, where
Lightning runs the save), the latent cache, the MLflow spool (and the logger that writes it) and exports. Once,
the real thing: ``workbench export --overwrite`` and a checkpoint save on a 1 MB tmpfs that fills up (a user +
mount namespace; skipped only where the kernel does not allow one).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from workbench import common
from workbench.common import DiskFull
from workbench.tracking import spool as tracking_spool
from workbench.train import checkpoint_io
from workbench.train.checkpoint_io import AtomicCheckpointIO, tensor_bytes

REPO = Path(__file__).resolve().parents[2]
ENOSPC = "No space left on device"


def _snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (hidden ones included) -> its sha256."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text, text
    return text


class _FillingFile:
    """A file object whose disk is full after ``room`` more bytes: the write that crosses it writes what fits,
    then raises ENOSPC, as a real filesystem does."""

    def __init__(self, f, room: int):
        self._f, self.room = f, room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self._f.write(data[: self.room])
            self._f.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, ENOSPC)
        self.room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


# -- checkpoints ----------------------------------------------------------------------------------
def _full_after(monkeypatch, module, room: int) -> None:
    """``module.os.fdopen`` (the file a checkpoint is written into) fills up after ``room`` bytes."""
    real = os.fdopen
    monkeypatch.setattr(module.os, "fdopen", lambda fd, *a, **k: _FillingFile(real(fd, *a, **k), room))


def test_checkpoint_on_a_full_disk_is_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 4, "w": torch.ones(1000)}, path)
    before = path.read_bytes()
    new = {"global_step": 8, "w": torch.zeros(256, 256), "state": {"m": [torch.zeros(10)]}}
    _full_after(monkeypatch, checkpoint_io, room=70_000)  # the real torch.save, cut off a quarter of the way
    with pytest.raises(DiskFull) as caught:
        io.save_checkpoint(new, path)
    monkeypatch.undo()
    message = _one_line(caught.value)
    assert message.startswith(f"{path}: disk full writing checkpoint (needed 256.0 KB")  # the tensors' bytes
    assert tensor_bytes(new) == 256 * 256 * 4 + 40
    assert path.read_bytes() == before and io.load_checkpoint(path)["global_step"] == 4
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left
    io.save_checkpoint(new, path)  # space again: the next save goes through
    assert io.load_checkpoint(path)["global_step"] == 8


def test_checkpoint_disk_full_is_recognised_when_torch_drops_the_oserror(tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError of its own; the ENOSPC its write met still decides."""
    path = tmp_path / "epoch=0-step=2.ckpt"

    def save(obj, f):
        try:
            f.write(b"PK\x03\x04" + b"\0" * 100)
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0") from None

    _full_after(monkeypatch, checkpoint_io, room=10)
    monkeypatch.setattr(checkpoint_io.torch, "save", save)
    with pytest.raises(DiskFull, match=rf"^{path}: disk full writing checkpoint \(needed 12 B"):
        checkpoint_io.atomic_torch_save({"w": torch.zeros(3)}, path)
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def save(obj, f):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoint_io.torch, "save", save)
    with pytest.raises(OSError, match="Input/output error") as caught:
        AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(3)}, tmp_path / "last.ckpt")
    assert not isinstance(caught.value, DiskFull) and list(tmp_path.iterdir()) == []


# `workbench fit` (4 steps, a checkpoint every 2) whose disk fills up during the second write of last.ckpt (the
# step-4 save), in a subprocess. With a user + mount namespace the checkpoints go to a real 8 MB tmpfs, which is
# filled (all but half a checkpoint) the moment that write opens its temporary file: torch.save meets the kernel's
# ENOSPC. Then, on the same tmpfs, a LoRA export fits once and, the disk filled again, not a second time
# (`--overwrite`): safetensors' writer meets the real ENOSPC. Without a namespace the checkpoint's file object fills
# up instead (_FillingFile). The script records what it saw in a JSON file, since the tmpfs vanishes with it.
FIT_WITH_FULL_DISK = textwrap.dedent("""
    import hashlib, json, os, shutil, sys
    from pathlib import Path
    repo, mode, mnt, work = sys.argv[1:5]
    sys.path.insert(0, repo)
    from tests.unit.test_disk_full import _FillingFile, _snapshot

    mnt, work, info = Path(mnt), Path(work), {"mode": mode}
    checkpoints = (mnt if mode == "tmpfs" else work) / "ckpts"
    real_fdopen, seen = os.fdopen, []

    def fill_leaving(leave):
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        with open(mnt / "fill", "ab") as f:
            f.write(bytes(max(free - leave, 0)))

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if target.name.startswith(".last.ckpt.") and target.name.endswith(".tmp"):
            seen.append(target)
            if len(seen) == 2:  # the second last.ckpt: record the checkpoints as they are, then the disk is full
                info["before"] = {k: v for k, v in _snapshot(checkpoints).items() if k.endswith(".ckpt")}
                half = (checkpoints / "last.ckpt").stat().st_size // 2
                if mode == "tmpfs":
                    fill_leaving(half)
                else:
                    return _FillingFile(f, half)
        return f

    os.fdopen = fdopen
    from workbench.cli import main
    code = main(sys.argv[5:])
    os.fdopen = real_fdopen
    info.update(code=code, after=_snapshot(checkpoints))
    shutil.copytree(checkpoints, work / "kept")
    if mode == "tmpfs":
        from workbench.common import DiskFull
        from workbench.export.job import export

        (mnt / "fill").unlink()
        out = mnt / "lora"
        export(str(checkpoints / "last.ckpt"), out, log_to_mlflow=False)
        info["export_before"] = _snapshot(out)
        fill_leaving((out / "pytorch_lora_weights.safetensors").stat().st_size // 2)
        try:
            export(str(checkpoints / "last.ckpt"), out, log_to_mlflow=False, overwrite=True)
        except DiskFull as e:
            info["export_error"] = str(e)
        info.update(export_after=_snapshot(out), mnt=sorted(os.listdir(mnt)))
    (work / "info.json").write_text(json.dumps(info))
    sys.exit(code)
""")

QUICK_CALLBACKS = """
trainer:
  callbacks:
    - class_path: workbench.train.checkpoint_io.RunCheckpoint
      init_args: {{dirpath: "{dirpath}", save_last: true, every_n_train_steps: 2, save_top_k: -1}}
    - class_path: workbench.train.guards.NonFiniteGuard
"""


def _namespace_mounts(directory: Path) -> bool:
    """Whether this machine lets a user + mount namespace mount a tmpfs (root in a container usually may)."""
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                               f"mount -t tmpfs -o size=1m tmpfs '{directory}'"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def fit_on_a_filling_disk(tmp_path_factory, tiny_model_dir, sample_data_dir) -> dict:
    from conftest import fit_args

    work = tmp_path_factory.mktemp("fit-disk-full")
    mnt = work / "mnt"
    mnt.mkdir()
    mode = "tmpfs" if _namespace_mounts(mnt) else "injected"
    (work / "quick.yaml").write_text(QUICK_CALLBACKS.format(dirpath=(mnt if mode == "tmpfs" else work) / "ckpts"))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "WORKBENCH_DEBUG")}
    env.update(PYTHONUNBUFFERED="1", SCRIPT=FIT_WITH_FULL_DISK)
    args = [str(REPO), mode, str(mnt), str(work),
            *fit_args(tiny_model_dir, sample_data_dir, "--config", str(work / "quick.yaml"), "--trainer.max_steps", "4")]
    command = [sys.executable, "-c", FIT_WITH_FULL_DISK, *args]
    if mode == "tmpfs":
        command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                   'mount -t tmpfs -o size=8m tmpfs "$1" && shift && exec "$@"', "sh", str(mnt), *command]
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    info_file = work / "info.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    return {"proc": proc, "info": info, "work": work, "mnt": mnt, "mode": mode,
            "uri": f"sqlite:///{work / 'mlflow.db'}"}


@pytest.mark.slow
def test_fit_whose_checkpoint_meets_a_full_disk_ends_in_one_line_and_a_failed_run(fit_on_a_filling_disk):
    import mlflow

    from conftest import only_run

    proc, info = fit_on_a_filling_disk["proc"], fit_on_a_filling_disk["info"]
    assert proc.returncode == 2 and info.get("code") == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.rstrip().splitlines()[-1] == errors[0], proc.stderr[-3000:]
    where = fit_on_a_filling_disk["mnt" if info["mode"] == "tmpfs" else "work"] / "ckpts" / "last.ckpt"
    assert errors[0].startswith(f"error: {where}: disk full writing checkpoint (needed ")
    run = only_run(fit_on_a_filling_disk["uri"])
    assert mlflow.MlflowClient(fit_on_a_filling_disk["uri"]).get_run(run.info.run_id).info.status == "FAILED"
    assert sorted(info["before"]) == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "last.ckpt"]
    assert info["after"] == info["before"]  # last.ckpt is the step-2 one, byte for byte; no temporary file
    kept = fit_on_a_filling_disk["work"] / "kept" / "last.ckpt"
    assert torch.load(kept, weights_only=True)["global_step"] == 2


# -- the latent cache -----------------------------------------------------------------------------
def _cache_key():
    from workbench.data.cache import CacheKey

    return CacheKey(model="/m", vae_config_sha256="v", text_encoder_config_sha256="t", num_frames=9, height=8,
                    width=8, fps=8.0, max_text_len=4, family="cogvideox-2b")


def _dataset(root: Path, n: int) -> Path:
    (root / "videos").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        (root / "videos" / f"{i}.mp4").write_bytes(b"")
        lines.append(json.dumps({"file_name": f"videos/{i}.mp4", "caption": f"clip {i}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _encode(entry) -> dict:
    seed = int(Path(entry.file_name).stem)
    g = torch.Generator().manual_seed(seed)
    return {"latent_dist": torch.randn(8, 3, 2, 2, generator=g), "prompt_embeds": torch.randn(4, 16, generator=g),
            "size": (8, 8)}


def test_cache_shard_on_a_full_disk_stops_prepare_and_keeps_the_complete_shards(tmp_path, monkeypatch):
    from workbench.data.cache import CachedLatentDataset, encode_entries

    root, cache, key = _dataset(tmp_path / "data", 2), tmp_path / "cache", _cache_key()
    encode_entries(cache, root, key, _encode, lambda: torch.zeros(4, 16), progress=False)
    _dataset(root, 4)  # two more clips: prepare again encodes only those
    before = _snapshot(cache)
    real_open = open

    def open_(path, mode="r", *args, **kwargs):  # common.atomic_write_bytes's file: the third shard's disk fills up
        f = real_open(path, mode, *args, **kwargs)
        return _FillingFile(f, 300) if Path(path).name.startswith(".000002.safetensors.") else f

    monkeypatch.setattr(common, "open", open_, raising=False)
    with pytest.raises(DiskFull) as caught:
        encode_entries(cache, root, key, _encode, lambda: torch.zeros(4, 16), progress=False)
    monkeypatch.undo()
    shard = cache / "shards" / "000002.safetensors"
    assert _one_line(caught.value).startswith(f"{shard}: disk full writing a cache shard (needed ")
    assert _snapshot(cache) == before  # shards 0 and 1 and their checksums, the index: as they were; nothing else
    encode_entries(cache, root, key, _encode, lambda: torch.zeros(4, 16), progress=False)  # space again
    assert f"(needed {shard.stat().st_size} B, " in str(caught.value)  # the shard's own size
    data = CachedLatentDataset(cache, key)
    assert len(data) == 4 and torch.equal(data[2]["latent_dist"], _encode(type("E", (), {"file_name": "2.mp4"}))
                                          ["latent_dist"])


def test_prepare_command_on_a_full_disk_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    """Through `workbench prepare`'s own error handling (cli.main): the DiskFull is one line, status 2."""
    from workbench.cli import main
    from workbench.data import prepare

    def fake_prepare(model, root, cache_dir, *args, **kwargs):
        return prepare.encode_entries(cache_dir, root, _cache_key(), _encode, lambda: torch.zeros(4, 16),
                                      progress=False)

    root, cache = _dataset(tmp_path / "data", 2), tmp_path / "cache"
    monkeypatch.setattr(prepare, "prepare_cache", fake_prepare)
    from workbench.train import datamodule  # the command reads the model's family first: no model here, 2B's rules

    monkeypatch.setattr(datamodule, "data_family", lambda model, family="auto", _read=datamodule.data_family: _read(None))
    real_open = open
    monkeypatch.setattr(common, "open", lambda p, m="r", *a, **k: _FillingFile(real_open(p, m, *a, **k), 0)
                        if Path(p).name.startswith(".000001.") else real_open(p, m, *a, **k), raising=False)
    code = main(["prepare", "--model", "/m", "--root", str(root), "--cache", str(cache), "--num-frames", "9",
                 "--height", "8", "--width", "8", "--fps", "8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {cache / 'shards' / '000001.safetensors'}: disk full writing a cache shard")
    assert sorted(p.name for p in (cache / "shards").iterdir()) == ["000000.safetensors", "000000.sha256"]


# -- the MLflow spool -----------------------------------------------------------------------------
def _record(i: int) -> dict:
    return {"op": "metrics", "run_id": "r", "tracking_uri": "sqlite:///x.db", "metrics": [["loss", i / 10, 1, i]]}


def test_spool_append_on_a_full_disk_keeps_the_spooled_records(tmp_path, monkeypatch):
    path = tmp_path / "run" / tracking_spool.SPOOL_FILE
    tracking_spool.append(path, _record(1))
    tracking_spool.append(path, _record(2))
    before = path.read_bytes()
    real_write = os.write

    def write(fd, data):  # 7 bytes land, then the disk is full
        real_write(fd, bytes(data)[:7])
        raise OSError(errno.ENOSPC, ENOSPC)

    monkeypatch.setattr(tracking_spool.os, "write", write)
    with pytest.raises(DiskFull) as caught:
        tracking_spool.append(path, _record(3))
    monkeypatch.undo()
    needed = len(tracking_spool.encode(_record(3)))
    assert _one_line(caught.value).startswith(f"{path}: disk full writing an MLflow spool record (needed {needed} B")
    assert path.read_bytes() == before  # cut back: no half line
    tracking_spool.append(path, _record(4))
    assert tracking_spool.read(path) == [_record(1), _record(2), _record(4)]


def test_spool_append_after_a_line_cut_short_by_a_kill_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / tracking_spool.SPOOL_FILE
    tracking_spool.append(path, _record(1))
    with open(path, "ab") as f:
        f.write(b'{"op": "metr')  # what a kill mid-append leaves
    tracking_spool.append(path, _record(2))
    assert tracking_spool.read(path) == [_record(1), _record(2)]


def test_logger_keeps_training_when_the_spool_disk_is_full_and_spools_in_order_once_there_is_space(
        tmp_path, monkeypatch, capsys):
    from mlflow.exceptions import MlflowException

    from workbench.tracking.logger import DurableMLflowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = DurableMLflowLogger("exp", tracking_uri=uri, retry_interval_s=60)
    spool = logger.spool_path = tmp_path / "run" / tracking_spool.SPOOL_FILE
    run_id = logger.run_id

    def unreachable(client, call):
        raise MlflowException("API request to http://127.0.0.1:1/api/2.0/mlflow/runs/log-batch failed")

    monkeypatch.setattr(tracking_spool, "send", unreachable)
    logger.log_metrics({"loss": 0.1}, step=1)  # spooled
    full = threading.Event()
    full.set()
    real_write = os.write

    def write(fd, data):
        if full.is_set():
            raise OSError(errno.ENOSPC, ENOSPC)
        return real_write(fd, data)

    monkeypatch.setattr(tracking_spool.os, "write", write)
    for step in (2, 3, 4):
        logger.log_metrics({"loss": step / 10}, step=step)  # training goes on: nothing raised
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "disk full" in line]
    assert len(notes) == 1 and notes[0].startswith(f"[workbench] {spool}: disk full, MLflow logging calls cannot be "
                                                   "spooled (the next needs ")
    assert [r["metrics"][0][3] for r in tracking_spool.read(spool)] == [1]
    full.clear()  # space again: the next call spools the kept ones first, in order
    logger.log_metrics({"loss": 0.5}, step=5)
    assert [r["metrics"][0][3] for r in tracking_spool.read(spool)] == [1, 2, 3, 4, 5]
    full.set()
    logger.log_metrics({"loss": 0.6}, step=6)
    logger.finalize("failed")  # the store still down, the disk still full: the end says what is where
    err = capsys.readouterr().err
    assert (f"7 logging calls of run {run_id} are kept in {spool}; 2 of them could not be written there (disk full) "
            "and are lost") in err
    assert [r["op"] for r in tracking_spool.read(spool)] == ["metrics"] * 5


# -- exports --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lora_export(fit_on_a_filling_disk, tmp_path_factory) -> dict:
    """A LoRA export (in-process, not logged) of the step-2 checkpoint the fit above kept."""
    from workbench.export.job import export

    ckpt = fit_on_a_filling_disk["work"] / "kept" / "last.ckpt"
    out = tmp_path_factory.mktemp("exports") / "lora"
    export(str(ckpt), out, log_to_mlflow=False, tracking_uri=fit_on_a_filling_disk["uri"])
    return {"checkpoint": ckpt, "out": out, "uri": fit_on_a_filling_disk["uri"]}


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


@pytest.mark.slow
def test_export_on_a_full_disk_keeps_the_previous_export(lora_export, tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from workbench.export.directory import verify_export
    from workbench.export.job import export

    out = tmp_path / "exports" / "lora"
    shutil.copytree(lora_export["out"], out)
    before = _snapshot(out)
    real = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):  # as safetensors fails on a real full disk: its own error
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 3)
        raise SafetensorError(f"Error while serializing: I/O error: {ENOSPC} (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    with pytest.raises(DiskFull) as caught:
        export(str(lora_export["checkpoint"]), out, log_to_mlflow=False, tracking_uri=lora_export["uri"],
               overwrite=True)
    monkeypatch.undo()
    adapter = load_file(out / "pytorch_lora_weights.safetensors")  # the export needed its tensors' bytes
    needed = str(common.disk_full_error(out, sum(t.nbytes for t in adapter.values()))).split("(", 1)[1].split(",")[0]
    assert _one_line(caught.value).startswith(f"{out}: disk full writing the export ({needed},")
    assert _snapshot(out) == before and verify_export(out) == []
    assert _siblings(out) == []  # the partial directory is gone


@pytest.mark.slow
def test_merged_export_that_cannot_fit_is_refused_before_writing(lora_export, tmp_path, monkeypatch):
    from workbench.export import job

    out = tmp_path / "merged"
    monkeypatch.setattr(job, "free_bytes", lambda path: 100_000)  # a disk with 100 KB free: the weights need more
    with pytest.raises(DiskFull) as caught:
        job.export(str(lora_export["checkpoint"]), out, merge=True, log_to_mlflow=False,
                   tracking_uri=lora_export["uri"])
    assert _one_line(caught.value).startswith(f"{out}: disk full writing the export (needed ")
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written


# -- once, on a real small filesystem -------------------------------------------------------------
@pytest.mark.slow
def test_checkpoint_and_export_on_a_real_full_filesystem(fit_on_a_filling_disk):
    """The fit above on a tmpfs: torch.save met the kernel's ENOSPC (the assertions of the fit test), and so did
    safetensors' writer under `workbench export --overwrite`; the previous export stayed, byte for byte."""
    info, mnt = fit_on_a_filling_disk["info"], fit_on_a_filling_disk["mnt"]
    if fit_on_a_filling_disk["mode"] != "tmpfs":
        pytest.skip("this machine does not let a user + mount namespace (unshare --user --map-root-user --mount) "
                    "mount a tmpfs; the fit above met an injected full disk instead")
    assert info["code"] == 2 and info["after"] == info["before"], fit_on_a_filling_disk["proc"].stderr[-3000:]
    error = info.get("export_error")
    assert error and "\n" not in error, info
    assert error.startswith(f"{mnt / 'lora'}: disk full writing the export (needed ")
    assert info["export_after"] == info["export_before"] and "pytorch_lora_weights.safetensors" in info["export_after"]
    assert info["mnt"] == ["ckpts", "fill", "lora"]  # no partial directory left beside the export
