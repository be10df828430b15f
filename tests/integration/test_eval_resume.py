"""`workbench eval` survives a kill, a full disk and being split: the smoke suite (3 prompts x 2 seeds, one video
per pipeline call) on the tiny model with the metric stand-ins. The killed run is a subprocess; the others go
through the CLI's ``main`` in this process (the import and start-up of a subprocess cost more than the videos).

A run SIGKILLed at a random video and run again, shards merged, and a run stopped by a full disk and run again
all give exactly the results.json metrics and per-video rows of one uninterrupted run, and generate only the
videos that were missing.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import REPO, only_run

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:FVD .* rank-deficient:UserWarning")]

SMOKE = REPO / "evals" / "suites" / "smoke.yaml"
NUM_VIDEOS = 6
KEYS = [f"{i:03d}-seed{s}" for i in range(3) for s in (0, 1)]  # the suite's videos in generation order


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_model_dir, sample_data_dir, metric_standins) -> dict:
    """The smoke suite with one video per pipeline call (so a kill can land between any two videos), the
    command line that evaluates the tiny model on it, and an uninterrupted run's results (the baseline)."""
    root = tmp_path_factory.mktemp("eval-resume")
    data = yaml.safe_load(SMOKE.read_text())
    data["batch_size"] = 1
    suite = root / "smoke-b1.yaml"
    suite.write_text(yaml.safe_dump(data))
    args = ["--suite", str(suite), "--model", str(tiny_model_dir), "--clip-model", str(metric_standins["clip"]),
            "--fvd-detector", str(metric_standins["i3d"]), "--reference", str(sample_data_dir),
            "--cache-dir", str(metric_standins["cache"])]
    baseline = root / "baseline"
    from workbench.eval.harness import evaluate

    evaluate(suite, str(tiny_model_dir), clip_model=str(metric_standins["clip"]), fvd_detector=str(metric_standins["i3d"]),
             reference=str(sample_data_dir), cache_dir=metric_standins["cache"], out=baseline, log_to_mlflow=False,
             progress=False)
    return {"root": root, "suite": suite, "data": data, "args": args, "baseline": baseline,
            "results": _results(baseline)}


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _same_results(out: Path, baseline: dict) -> None:
    """Exactly the baseline's metrics (intervals included) and per-video rows."""
    got = _results(out)
    assert got["metrics"] == baseline["metrics"]
    assert got["videos"] == baseline["videos"]
    assert got["intervals"] == baseline["intervals"]


def _counts(stdout: str) -> tuple[int, int]:
    m = re.search(r"\((\d+) generated now, (\d+) done before\)", stdout)
    assert m, stdout
    return int(m[1]), int(m[2])


def _finished(out: Path, folder: str = "scores") -> list[str]:
    return sorted(p.stem for p in (out / folder).glob("*.json"))


def _file_ids(out: Path, names: list[str]) -> dict:
    """(inode, mtime) of each finished video and its record: a regenerated one gets a new inode (os.replace)."""
    ids = {}
    for name in names:
        for path in (out / "videos" / f"{name}.mp4", out / "scores" / f"{name}.json",
                     out / "scores" / f"{name}.safetensors"):
            st = path.stat()
            ids[str(path)] = (st.st_ino, st.st_mtime_ns)
    return ids


def _in_process(args: list[str], capsys) -> tuple[int, str, str]:
    from workbench.cli import main

    rc = main(["eval", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


# -- SIGKILL at a random video, then the same command again ----------------------------------------------------------
def test_sigkilled_eval_resumes_to_the_same_results_and_logs_once(work, capsys, monkeypatch):
    monkeypatch.chdir(work["root"])  # MLflow's artifact root (./mlruns) for the in-process runs
    out, uri = work["root"] / "killed", f"sqlite:///{work['root'] / 'mlflow.db'}"
    cmd = ["eval", *work["args"], "--out", str(out), "--tracking-uri", uri]
    k = random.Random(20240611).randint(1, NUM_VIDEOS - 2)  # kill once k videos are finished
    log = (work["root"] / "killed.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", *cmd], cwd=work["root"], env=_env(),
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while len(_finished(out) if out.is_dir() else []) < k:
        assert proc.poll() is None, f"ended before the kill: {(work['root'] / 'killed.log').read_text()[-3000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    done = _finished(out)
    assert k <= len(done) < NUM_VIDEOS and done == KEYS[:len(done)], done
    before = _file_ids(out, done)
    assert not (out / "results.json").exists()

    rc, stdout, err = _in_process(cmd[1:], capsys)  # (the baseline ran in this process too: the same numbers)
    assert rc == 0, err
    assert _counts(stdout) == (NUM_VIDEOS - len(done), len(done))
    assert re.search(r"\d+/6 videos .*videos/h", err)  # the bar: done / total, videos per hour, ETA
    assert _file_ids(out, done) == before  # the finished videos and their scores were not touched
    _same_results(out, work["results"])
    client = mlflow.MlflowClient(uri)
    run = only_run(uri, experiment="workbench-eval")
    assert run.info.status == "FINISHED" and run.data.metrics["eval/smoke/fvd"] == work["results"]["metrics"]["eval/fvd"]

    def histories() -> dict:
        return {k: len(client.get_metric_history(run.info.run_id, f"eval/smoke/{k.removeprefix('eval/')}"))
                for k in work["results"]["metrics"]}

    assert set(histories().values()) == {1}
    # A finished evaluation run again generates nothing, reports the same results and does not log again ...
    rc, stdout, err = _in_process(cmd[1:], capsys)
    assert rc == 0 and _counts(stdout) == (0, NUM_VIDEOS) and "not logged again" in err
    _same_results(out, work["results"])
    # ... and one stopped while logging goes on in the run it began, without logging a metric twice.
    state = json.loads((out / ".eval-state.json").read_text())
    state["mlflow"]["done"] = False
    (out / ".eval-state.json").write_text(json.dumps(state))
    rc, stdout, err = _in_process(cmd[1:], capsys)
    assert rc == 0 and only_run(uri, experiment="workbench-eval").info.run_id == run.info.run_id
    assert set(histories().values()) == {1}
    assert _results(out)["run_id"] == run.info.run_id


# -- --shard 1/2 + --shard 2/2, then --merge --------------------------------------------------------------------------
def test_shards_merge_to_the_unsharded_results(work, capsys):
    root = work["root"]
    parts = [root / "part1", root / "part2"]
    for i, part in enumerate(parts, 1):
        rc, stdout, err = _in_process([*work["args"], "--no-mlflow", "--shard", f"{i}/2", "--out", str(part)], capsys)
        assert rc == 0, err
        assert _counts(stdout) == (3, 0) and f"shard {i}/2" in stdout
    # shards split by pipeline batch (here: by video), round robin
    assert _finished(parts[0]) == KEYS[0::2] and _finished(parts[1]) == KEYS[1::2]
    assert not (parts[0] / "results.json").exists()

    final = root / "merged"
    merge = [*work["args"], "--no-mlflow", "--out", str(final), "--merge"]
    rc, _, err = _in_process([*merge, str(parts[0])], capsys)  # one shard missing: refused, nothing written
    assert rc == 2 and "shard 2/2: not among --merge" in _one_line_error(err) and not final.exists()

    other = root / "part2-other"  # a shard of another evaluation (other sampling steps)
    shutil.copytree(parts[1], other)
    state = json.loads((other / ".eval-state.json").read_text())
    state["fingerprint"]["suite"]["num_inference_steps"] = 3
    (other / ".eval-state.json").write_text(json.dumps(state))
    rc, _, err = _in_process([*merge, str(parts[0]), str(other)], capsys)
    line = _one_line_error(err)
    assert rc == 2 and f"--merge {other}: a shard of another evaluation" in line and "num_inference_steps" in line

    rc, stdout, err = _in_process([*merge, str(parts[0]), str(parts[1])], capsys)
    assert rc == 0, err
    assert _counts(stdout) == (0, NUM_VIDEOS)  # generated nothing
    _same_results(final, work["results"])
    assert sorted(p.name for p in (final / "videos").glob("*.mp4")) == [f"{k}.mp4" for k in KEYS]


# -- a full disk at a video's write ------------------------------------------------------------------------------------
def _full_disk_at(monkeypatch, name: str) -> None:
    """The disk fills up while ``name`` is written: its fsync fails with ENOSPC (the real writer, its temporary
    file and all, runs up to there)."""
    real_fsync = os.fsync

    def fsync(fd):
        if name in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_at_a_video_stops_in_one_line_and_the_rerun_completes(work, capsys, monkeypatch):
    out = work["root"] / "full-disk"
    cmd = [*work["args"], "--no-mlflow", "--out", str(out)]
    failing = KEYS[2] + ".mp4"  # the third video
    with monkeypatch.context() as m:
        _full_disk_at(m, failing)
        rc, _, err = _in_process(cmd, capsys)
    line = _one_line_error(err)
    assert rc == 2 and f"{out / 'videos' / failing}: disk full writing a video" in line, err
    assert "run the same command again" in line
    from workbench.data.video import probe
    from workbench.eval.scoring import load_video_scores

    finished, problems = load_video_scores(out / "scores", out)  # checks each video against its record's sha256
    assert sorted(finished) == [(0, 0), (0, 1)] and not problems
    assert all(probe(v.path).num_frames == 17 for v in finished.values())
    assert not (out / "videos" / failing).exists() and not list(out.rglob("*.tmp"))
    before = _file_ids(out, KEYS[:2])

    rc, stdout, err = _in_process(cmd, capsys)
    assert rc == 0, err
    assert _counts(stdout) == (NUM_VIDEOS - 2, 2)
    assert _file_ids(out, KEYS[:2]) == before
    _same_results(out, work["results"])


def test_disk_full_at_the_results_keeps_the_old_files(work, capsys, monkeypatch):
    out = work["root"] / "full-disk-results"
    shutil.copytree(work["baseline"], out)
    old = {name: (out / name).read_bytes() for name in ("results.json", "grid.png")}
    _full_disk_at(monkeypatch, "grid.png")
    rc, _, err = _in_process([*work["args"], "--no-mlflow", "--out", str(out)], capsys)
    assert rc == 2 and f"{out / 'grid.png'}: disk full writing the first-frame grid" in _one_line_error(err)
    assert {name: (out / name).read_bytes() for name in old} == old
    monkeypatch.undo()
    rc, stdout, err = _in_process([*work["args"], "--no-mlflow", "--out", str(out)], capsys)
    assert rc == 0 and _counts(stdout) == (0, NUM_VIDEOS)
    _same_results(out, work["results"])


# -- an --out of another evaluation, a bad --shard ---------------------------------------------------------------------
def test_resume_refused_for_another_evaluation(work, capsys, tmp_path):
    baseline = work["baseline"]
    args = work["args"]

    def refused(extra: list[str], out: Path, suite: Path | None = None) -> str:
        full = [*args, "--no-mlflow", "--out", str(out), *extra]
        if suite is not None:
            full[full.index("--suite") + 1] = str(suite)
        rc, _, err = _in_process(full, capsys)
        assert rc == 2
        return _one_line_error(err)

    def suite_with(**changes) -> Path:
        path = tmp_path / f"suite-{len(list(tmp_path.glob('suite-*')))}.yaml"
        path.write_text(yaml.safe_dump({**work["data"], **changes}))
        return path

    line = refused([], baseline, suite_with(num_inference_steps=3))
    assert f"--out {baseline}: holds another evaluation" in line and "num_inference_steps 2 there, 3 now" in line
    line = refused([], baseline, suite_with(seeds=[0, 2]))
    assert "holds another evaluation" in line and "seeds [0, 1] there, [0, 2] now" in line
    line = refused([], baseline, suite_with(name="smoke-other"))
    assert "holds another evaluation (suite smoke;" in line and "name" in line
    line = refused(["--dtype", "bf16"], baseline)
    assert "holds another evaluation" in line and "dtype" in line
    line = refused(["--shard", "1/2"], baseline)
    assert f"--out {baseline}: holds the whole suite (no --shard) of this evaluation" in line
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert "holds no evaluation to continue" in refused([], tmp_path / "other")
    assert refused(["--shard", "5/4"], tmp_path / "new").startswith("error: --shard 5/4: I must be 1 to N")
    assert "write it as I/N" in refused(["--shard", "2"], tmp_path / "new")
    assert "at most 6 shards" in refused(["--shard", "1/7"], tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert _results(baseline) == work["results"]  # nothing of the baseline changed
