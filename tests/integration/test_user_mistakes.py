"""A user's mistake ends in one line that names the file and the fix, exit status 2, no traceback; and what
used to be silently wrong (paths outside the dataset, Excel CSVs, multi-line captions, a lost final step)
is right. Each runs the CLI in a subprocess, as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import fit_args, only_run, run_cli

pytestmark = pytest.mark.slow


def one_line_error(proc) -> str:
    """The stderr line of a user error; fails unless the process exited 2 without a traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_fit_without_a_dataset_and_with_an_unknown_recipe(tmp_path, tiny_model_dir):
    proc = run_cli(["fit", "--config", "tiny-cpu", "--model.model", str(tiny_model_dir)], cwd=tmp_path, check=False)
    assert "sample-data: dataset folder not found" in one_line_error(proc)
    proc = run_cli(["fit", "--config", "tiny-cpus"], cwd=tmp_path, check=False)
    line = one_line_error(proc)
    assert "recipe 'tiny-cpus' not found; bundled recipes:" in line and "shapes-lora-cpu" in line


def test_a_model_path_that_does_not_exist_fails_fast_offline(tmp_path, sample_data_dir):
    proc = run_cli(["fit", "--config", "tiny-cpu", "--model.model", "models/tiny-cogvideox", "--data.root",
                    str(sample_data_dir)], cwd=tmp_path, check=False, env={"HF_HUB_OFFLINE": "1"}, timeout=120)
    line = one_line_error(proc)
    assert "models/tiny-cogvideox: no such local directory" in line and "hub cannot be reached" in line


def test_data_check_reads_the_recipe_as_fit_does(tmp_path, sample_data_dir):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("data:\n  num_frame: 9\n")
    proc = run_cli(["data", "check", str(sample_data_dir), "--recipe", str(recipe)], cwd=tmp_path, check=False)
    assert "Group 'data' does not accept option 'num_frame'" in one_line_error(proc)


def test_prepare_with_a_mistyped_root_creates_nothing(tmp_path, tiny_model_dir):
    proc = run_cli(["prepare", "--model", str(tiny_model_dir), "--root", str(tmp_path / "datta"), "--cache", "auto",
                    "--num-frames", "9", "--height", "64", "--width", "64", "--fps", "8"], cwd=tmp_path, check=False)
    assert "datta: dataset folder not found" in one_line_error(proc)
    assert not (tmp_path / "datta").exists()


def test_every_reader_refuses_paths_outside_the_dataset(tmp_path, tiny_model_dir, sample_data_dir):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(sample_data_dir, root)
    (tmp_path / "elsewhere.mp4").write_bytes((root / "videos").glob("*.mp4").__next__().read_bytes())
    rows = (root / "metadata.jsonl").read_text().splitlines()
    rows.append(json.dumps({"file_name": "../elsewhere.mp4", "caption": "a red circle"}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    where = f"metadata.jsonl:{len(rows)}"
    proc = run_cli(fit_args(tiny_model_dir, root, "--trainer.max_steps", "1"), cwd=tmp_path, check=False)
    assert f"../elsewhere.mp4 ({where}): path leaves the dataset root" in one_line_error(proc)
    proc = run_cli(["prepare", "--model", str(tiny_model_dir), "--root", str(root), "--cache", str(tmp_path / "c"),
                    "--num-frames", "9", "--height", "64", "--width", "64", "--fps", "8"], cwd=tmp_path, check=False)
    assert f"../elsewhere.mp4 ({where}): path leaves the dataset root" in one_line_error(proc)


def test_excel_csv_and_multi_line_captions_read_right(tmp_path):
    from workbench.data.manifest import read_manifest

    (tmp_path / "metadata.csv").write_bytes(
        "\ufefffile_name,caption\r\na.mp4,\"first line\r\nsecond line\"\r\nb.mp4,plain\r\n".encode("utf-8"))
    a, b = read_manifest(tmp_path)
    assert (a.file_name, a.caption, a.where) == ("a.mp4", "first line\nsecond line", "metadata.csv:2")
    assert (b.file_name, b.where) == ("b.mp4", "metadata.csv:4")  # the line it starts on, after the 2-line row


def test_a_suite_yaml_error_names_line_and_column(tmp_path, tiny_model_dir):
    suite = tmp_path / "bad.yaml"
    suite.write_text("name: bad\nprompts:\n  - a red circle: moving\n    oops\n")
    proc = run_cli(["eval", "--suite", str(suite), "--model", str(tiny_model_dir)], cwd=tmp_path, check=False)
    assert f"{suite}:4:" in one_line_error(proc)


def test_fit_says_where_the_run_is_and_saves_its_final_step(tmp_path, tiny_model_dir, sample_data_dir):
    """max_steps 5 with checkpoints every 16 steps: the run's final step is what last.ckpt (and export) holds."""
    proc = run_cli(fit_args(tiny_model_dir, sample_data_dir, "--trainer.max_steps", "5"), cwd=tmp_path)
    run = only_run(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_dir = (tmp_path / "runs" / run.info.run_id).resolve()
    assert f"MLflow run {run.info.run_id}" in proc.stdout and f"run folder {run_dir}" in proc.stdout
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 5
    out = tmp_path / "export"
    run_cli(["export", run.info.run_id, "--out", str(out)], cwd=tmp_path)
    assert json.loads((out / "export.json").read_text())["global_step"] == 5


def test_skipped_samples_from_the_cache_are_reported(tmp_path, tiny_model_dir, sample_data_dir):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(sample_data_dir, root)
    broken = sorted((root / "videos").glob("*.mp4"))[-1]
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated download
    proc = run_cli(fit_args(tiny_model_dir, root, "--trainer.max_steps", "2", "--data.cache", "auto",
                            "--model.encoders", "offload", "--data.on_bad_sample", "skip"), cwd=tmp_path)
    assert "1 samples skipped (data.on_bad_sample: skip)" in proc.stdout and "skipped_samples.json" in proc.stdout


def test_eval_reports_every_bad_reference_clip_at_once(tmp_path, tiny_model_dir, sample_data_dir, metric_standins):
    import shutil

    from tests.conftest import REPO

    ref = tmp_path / "ref"
    shutil.copytree(sample_data_dir, ref)
    clips = sorted((ref / "videos").glob("*.mp4"))
    clips[0].write_bytes(b"")  # empty
    clips[1].unlink()  # missing
    rows = (ref / "metadata.jsonl").read_text().splitlines() + [json.dumps({"file_name": "../x.mp4"})]
    (ref / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    proc = run_cli(["eval", "--suite", str(REPO / "evals" / "suites" / "smoke.yaml"), "--model", str(tiny_model_dir),
                    "--reference", str(ref), "--clip-model", str(metric_standins["clip"]), "--fvd-detector",
                    str(metric_standins["i3d"]), "--no-mlflow", "--out", str(tmp_path / "out")], cwd=tmp_path,
                   check=False)
    line = one_line_error(proc)
    assert "3 of 9 unusable" in line and clips[0].name in line and clips[1].name in line and "../x.mp4" in line
    assert "workbench data check" in line


# Inputs the fuzz tests (tests/unit/test_fuzz.py) found to end in a traceback, each through the real CLI once.

def test_fuzzed_manifests_end_in_a_report_or_one_line(tmp_path, tiny_model_dir):
    """A jsonl line nested 100 000 deep was a RecursionError in `data check`; a NUL byte or a symlink loop in a
    path a ValueError / RuntimeError in `prepare` (and training). Now: the report, and one line."""
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "caption": "a"}) + "\n" + "[" * 100_000 + "\n")
    proc = run_cli(["data", "check", str(deep), "--num-frames", "9", "--height", "64", "--width", "64", "--fps", "8",
                    "--out", str(tmp_path / "report")], cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "metadata.jsonl:2: invalid JSON (nested too deeply)" in proc.stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "loop").symlink_to("loop")
    (bad / "metadata.jsonl").write_text(json.dumps({"file_name": "a\x00b.mp4", "caption": "a"}) + "\n"
                                        + json.dumps({"file_name": "loop/x.mp4", "caption": "b"}) + "\n")
    proc = run_cli(["prepare", "--model", str(tiny_model_dir), "--root", str(bad), "--cache", str(tmp_path / "c"),
                    "--num-frames", "9", "--height", "64", "--width", "64", "--fps", "8"], cwd=tmp_path, check=False)
    line = one_line_error(proc)
    assert "2 manifest entries" in line and "metadata.jsonl:1): the path has a NUL byte" in line
    assert "loop/x.mp4 (metadata.jsonl:2): the path cannot be resolved (Symlink loop" in line


def test_a_fuzzed_suite_ends_in_one_line(tmp_path, tiny_model_dir):
    """A suite saved as UTF-16 (or any bytes that are not UTF-8) was a UnicodeDecodeError."""
    suite = tmp_path / "utf16.yaml"
    suite.write_bytes("name: x\nprompts: [a, b]\n".encode("utf-16"))
    proc = run_cli(["eval", "--suite", str(suite), "--model", str(tiny_model_dir)], cwd=tmp_path, check=False)
    assert f"{suite}:1: the suite is not UTF-8 text (byte 0xff)" in one_line_error(proc)


def test_a_fuzzed_recipe_ends_in_one_line(tmp_path, tiny_model_dir, sample_data_dir):
    """A value that parses but that its class refuses when built (data.val_split: -1) was the data module's
    ValueError with a traceback, after Lightning had started."""
    import yaml

    from tests.conftest import TINY_RECIPE

    recipe = yaml.safe_load(Path(TINY_RECIPE).read_text())
    recipe["data"]["val_split"] = -1
    path = tmp_path / "mutated.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    proc = run_cli(["fit", "--config", str(path), "--model.model", str(tiny_model_dir), "--data.root",
                    str(sample_data_dir)], cwd=tmp_path, check=False)
    line = one_line_error(proc)
    assert f"{path}: val_split=-1: give a number of held-out entries >= 0" in line and "override" in line
