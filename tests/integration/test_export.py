"""``workbench export`` and ``workbench generate`` on the tiny model, as a user runs them.

The round-trip tests render the same seeded video three ways and compare them:
  * inside the workbench: ``load_finetuned(checkpoint).pipeline()`` (PEFT adapter as trained);
  * stock diffusers in a fresh process that never imports workbench: the base pipeline plus
    ``load_lora_weights(export_dir)``, and ``CogVideoXPipeline.from_pretrained(merged_dir)``.
Tolerances (max abs difference of the fp32 video in [0, 1]): LoRA vs workbench < 1e-4 (the same
PEFT computation); merged vs workbench < 1e-3 (fused weights round differently). The fine-tune
must move the video by far more than that (> 1e-2 from the base model), or the test proves nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import fit_args, only_run, run_cli

pytestmark = pytest.mark.slow

LORA_TOL = 1e-4
MERGED_TOL = 1e-3
MIN_EFFECT = 1e-2
PROMPT = "a red circle moving from left to right on a dark background"
SAMPLE = dict(num_frames=9, height=64, width=64, num_inference_steps=3, guidance_scale=3.0, output_type="np",
              max_sequence_length=32)

# Runs in a fresh interpreter: stock diffusers only, never workbench. An image (image-to-video pipelines) is
# loaded with diffusers' own load_image and passed to every render.
STOCK_SCRIPT = """
import json, sys
import numpy as np, torch
import diffusers
from diffusers.utils import load_image

base, lora, merged, out, pipeline, image = sys.argv[1:7]
kwargs = json.loads(sys.argv[7])
Pipeline = getattr(diffusers, pipeline)
if image != "-":
    kwargs["image"] = load_image(image)

def render(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=torch.Generator().manual_seed(0), **kwargs).frames[0]

videos = {"base": render(Pipeline.from_pretrained(base))}
if lora != "-":
    pipe = Pipeline.from_pretrained(base)
    pipe.load_lora_weights(lora)
    videos["lora"] = render(pipe)
if merged != "-":
    videos["merged"] = render(Pipeline.from_pretrained(merged))
assert not any(m == "workbench" or m.startswith("workbench.") for m in sys.modules), "workbench was imported"
np.savez(out, **videos)
"""


def stock_videos(tmp_path: Path, base: Path, lora: Path | None, merged: Path | None,
                 pipeline: str = "CogVideoXPipeline", image: Path | None = None) -> dict[str, np.ndarray]:
    script = tmp_path / "stock_diffusers.py"
    script.write_text(STOCK_SCRIPT)
    out = tmp_path / "stock.npz"
    proc = subprocess.run([sys.executable, str(script), str(base), str(lora or "-"), str(merged or "-"), str(out),
                           pipeline, str(image or "-"), json.dumps({"prompt": PROMPT, **SAMPLE})],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(np.load(out))


def workbench_video(checkpoint: Path, base: Path) -> np.ndarray:
    """The fine-tuned model as the workbench holds it, sampled with the model's own inference scheduler."""
    import torch
    from diffusers import CogVideoXDDIMScheduler

    from workbench.model.checkpoint import load_finetuned

    pipe = load_finetuned(checkpoint).pipeline()
    # load_components gives the training scheduler (DPM); stock from_pretrained uses the saved one (DDIM).
    pipe.scheduler = CogVideoXDDIMScheduler.from_pretrained(base, subfolder="scheduler")
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **SAMPLE).frames[0]


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape == (9, 64, 64, 3)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def call_export(*args: str) -> int:
    """The export command in-process, through the `workbench` CLI's own entry point."""
    from workbench.cli import main

    return main(["export", *args])


@pytest.fixture(scope="module")
def lora_export(trained_lora_run, tmp_path_factory) -> Path:
    """`workbench export RUN_ID --merge` of the shared LoRA run (run id resolved through MLflow)."""
    out = tmp_path_factory.mktemp("exports") / "lora-export"
    proc = run_cli(["export", trained_lora_run["run_id"], "--out", str(out), "--merge"],
                   cwd=trained_lora_run["workdir"])
    assert "registered as" in proc.stdout, proc.stdout
    return out


def test_lora_export_loads_in_stock_diffusers(lora_export, trained_lora_run, tiny_model_dir, sample_data_dir,
                                              tmp_path):
    from safetensors import safe_open

    from workbench.export.directory import verify_export

    assert verify_export(lora_export) == []
    lora_file = lora_export / "pytorch_lora_weights.safetensors"
    with safe_open(str(lora_file), "pt") as f:
        keys = list(f.keys())
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    assert keys and all(k.startswith("transformer.") and ".lora_" in k for k in keys)
    assert (meta["transformer.r"], meta["transformer.lora_alpha"]) == (16, 16)
    assert not list(lora_export.rglob("*.bin")) and not list(lora_export.rglob("*.ckpt"))
    with safe_open(str(lora_export / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k or "base_layer" in k]  # merged: plain weights

    stock = stock_videos(tmp_path, tiny_model_dir, lora_export, lora_export)
    ours = workbench_video(trained_lora_run["checkpoint"], tiny_model_dir)
    assert max_diff(stock["base"], ours) > MIN_EFFECT, "the LoRA does not change the video; the test cannot fail"
    assert max_diff(stock["lora"], ours) < LORA_TOL
    assert max_diff(stock["merged"], ours) < MERGED_TOL

    card = (lora_export / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: diffusers" in front and "license: other" in front  # local base: license unknown
    for tag in ("text-to-video", "cogvideox", "lora", "diffusers-training"):
        assert f"- {tag}" in front
    assert "experiment_name: tiny-cpu" in card  # the recipe (run dir config.yaml)
    assert (sample_data_dir / "README.md").read_text().splitlines()[-1] in card  # the dataset card
    assert "pipe.load_lora_weights(" in card and "CogVideoXPipeline.from_pretrained(" in card


def test_export_is_registered_with_lineage(lora_export, trained_lora_run):
    from mlflow import MlflowClient

    client = MlflowClient(trained_lora_run["tracking_uri"])
    run_id = trained_lora_run["run_id"]
    versions = client.search_model_versions(f"run_id='{run_id}'")
    assert [(v.name, v.run_id) for v in versions] == [("tiny-cpu-lora", run_id)]
    assert versions[0].source.endswith("/export")
    logged = {Path(a.path).name for a in client.list_artifacts(run_id, "export")}
    assert {"pytorch_lora_weights.safetensors", "README.md", "export.json", "transformer"} <= logged
    marker = json.loads((lora_export / "export.json").read_text())
    assert marker["run_id"] == run_id and marker["mode"] == "lora" and marker["merged"] is True


def test_generate_renders_from_exports(lora_export, tiny_model_dir, tmp_path, capsys):
    common = ["--prompt", PROMPT, "--steps", "2", "--frames", "9", "--height", "64", "--width", "64"]
    run_cli(["generate", "--model", str(lora_export), "--out", "merged.mp4", *common], cwd=tmp_path)
    assert (tmp_path / "merged.mp4").stat().st_size > 0

    from workbench.cli import main
    from workbench.model.pipeline import generate_video, load_pipeline
    from workbench.model.families import family_of_model

    lora_file = lora_export / "pytorch_lora_weights.safetensors"
    generate_video(str(tiny_model_dir), PROMPT, tmp_path / "lora.mp4", lora=str(lora_file), steps=2, frames=9,
                   height=64, width=64, device="cpu", progress=False)
    assert (tmp_path / "lora.mp4").stat().st_size > 0 and not list(tmp_path.glob(".lora*"))
    for lora in (lora_file, lora_export):  # the file or the directory holding it
        assert load_pipeline(str(tiny_model_dir), str(lora), device="cpu", family=family_of_model(str(tiny_model_dir))).transformer.peft_config

    assert main(["generate", "--model", str(tiny_model_dir), "--out", str(tmp_path / "x.mp4"),
                 "--prompt", "x", "--frames", "10"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: num_frames=10")


def test_compiled_sampling_matches_eager(lora_export, tiny_model_dir):
    """`generate/eval --compile`: the blocks are compiled (Inductor, CPU here) and render the same video."""
    import torch

    from workbench.model.families import family_of_model
    from workbench.model.pipeline import load_pipeline

    lora_file = lora_export / "pytorch_lora_weights.safetensors"
    videos = {}
    for compile in (False, True):
        pipe = load_pipeline(str(tiny_model_dir), str(lora_file), device="cpu", compile=compile,
                             family=family_of_model(str(tiny_model_dir)))
        pipe.set_progress_bar_config(disable=True)
        compiled = [b._compiled_call_impl is not None for b in pipe.transformer.transformer_blocks]
        assert all(compiled) if compile else not any(compiled)
        videos[compile] = pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **SAMPLE).frames[0]
    assert max_diff(videos[True], videos[False]) < LORA_TOL


def test_lora_alpha_survives_export(trained_lora_run, tiny_model_dir, tmp_path):
    """alpha != rank: diffusers only reproduces the scaling through the saved adapter metadata."""
    import torch

    ckpt = torch.load(trained_lora_run["checkpoint"], map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["lora"]["alpha"] = 48.0  # scale 3 instead of 1
    scaled = tmp_path / "scaled.ckpt"
    torch.save(ckpt, scaled)
    assert call_export(str(scaled), "--out", str(tmp_path / "scaled"), "--no-mlflow") == 0
    stock = stock_videos(tmp_path, tiny_model_dir, tmp_path / "scaled", None)
    ours = workbench_video(scaled, tiny_model_dir)
    assert max_diff(stock["lora"], ours) < LORA_TOL


def test_full_finetune_export_round_trip(tiny_model_dir, sample_data_dir, tmp_path):
    run_cli(fit_args(tiny_model_dir, sample_data_dir, "--model.mode", "full", "--trainer.max_steps", "4",
                     "--model.validation.timesteps", "1"), cwd=tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = only_run(uri)
    ckpt = tmp_path / "runs" / run.info.run_id / "checkpoints" / "last.ckpt"
    out = tmp_path / "full-export"
    run_cli(["export", str(ckpt), "--out", str(out), "--base-model-id", "THUDM/CogVideoX-2b"], cwd=tmp_path)
    assert (out / "model_index.json").is_file() and not (out / "pytorch_lora_weights.safetensors").exists()
    front = (out / "README.md").read_text().split("---")[1]
    assert "base_model: THUDM/CogVideoX-2b" in front and "license: apache-2.0" in front and "- full" in front

    stock = stock_videos(tmp_path, tiny_model_dir, None, out)
    ours = workbench_video(ckpt, tiny_model_dir)
    assert max_diff(stock["base"], ours) > MIN_EFFECT, "the fine-tune does not change the video"
    assert max_diff(stock["merged"], ours) < MERGED_TOL

    from mlflow import MlflowClient

    versions = MlflowClient(uri).search_model_versions(f"run_id='{run.info.run_id}'")
    assert [v.name for v in versions] == ["tiny-cpu-full"]


def test_killed_export_leaves_nothing_complete(trained_lora_run, tmp_path, capsys):
    from workbench.export.directory import is_complete_export, verify_export

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "workbench.cli", "export", str(trained_lora_run["checkpoint"]), "--out", str(out),
           "--merge", "--no-mlflow"]
    rng = random.Random()
    for attempt in range(4):
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not list(tmp_path.glob(".killed.partial-*")) and proc.poll() is None:
                assert time.monotonic() < deadline, "the export never started writing"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.15))  # somewhere inside the write
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
        if not out.exists():
            break
        shutil.rmtree(out)  # finished before the kill landed; try again
    else:
        pytest.fail("could not kill the export before it finished")
    partials = list(tmp_path.glob(".killed.partial-*"))
    assert partials and not any(is_complete_export(p) for p in partials)

    run_cli(cmd[3:], cwd=tmp_path)
    assert verify_export(out) == []
    assert not list(tmp_path.glob(".killed.*")), "stale partial directories were not cleaned"
    capsys.readouterr()
    assert call_export(*cmd[4:]) == 2  # a complete export is not replaced silently
    assert "--overwrite" in capsys.readouterr().err
    assert call_export(*cmd[4:], "--overwrite") == 0
    assert verify_export(out) == [] and not list(tmp_path.glob(".killed.*"))


def test_push_to_hub_uploads_the_finished_export(trained_lora_run, tiny_model_dir, tmp_path, monkeypatch):
    import huggingface_hub

    from workbench.export.directory import is_complete_export

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            calls.append(("upload_folder", repo_id, folder_path, is_complete_export(folder_path)))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "hub-export"
    assert call_export(str(trained_lora_run["checkpoint"]), "--out", str(out), "--no-mlflow",
                       "--push-to-hub", "me/tiny-cogvideox-lora") == 0
    assert calls[0][:2] == ("create_repo", "me/tiny-cogvideox-lora") and calls[0][2].get("exist_ok") is True
    assert calls[1] == ("upload_folder", "me/tiny-cogvideox-lora", str(out), True)
    card = (out / "README.md").read_text()
    assert 'load_lora_weights("me/tiny-cogvideox-lora")' in card
    # the base is a local directory: the card names a placeholder and says what it stands for, not a path of
    # the machine that exported it
    assert 'from_pretrained("PATH/TO/BASE_MODEL"' in card and "replace the placeholder" in card
    assert f'from_pretrained("{tiny_model_dir}' not in card


def test_refuses_pickled_and_partial_checkpoints(trained_lora_run, tmp_path, capsys):
    import torch

    from workbench.model.checkpoint import CheckpointError, load_finetuned

    ckpt = torch.load(trained_lora_run["checkpoint"], map_location="cpu", weights_only=True)
    pickled = dict(ckpt, extra=argparse.Namespace(x=1))  # an arbitrary object: needs full unpickling
    torch.save(pickled, tmp_path / "pickled.ckpt")
    proc = run_cli(["export", str(tmp_path / "pickled.ckpt"), "--out", str(tmp_path / "x"), "--no-mlflow"],
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "weights_only" in proc.stderr
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))

    partial = dict(ckpt, state_dict=dict(list(ckpt["state_dict"].items())[1:]))
    torch.save(partial, tmp_path / "partial.ckpt")
    with pytest.raises(CheckpointError, match="missing from the checkpoint"):
        load_finetuned(tmp_path / "partial.ckpt", load_vae=False, load_text_encoder=False)
    capsys.readouterr()
    assert call_export(str(trained_lora_run["checkpoint"]), "--out", str(tmp_path / "y"), "--no-mlflow",
                       "--base-model", str(tmp_path / "nowhere")) == 2
    assert "nowhere: no such model directory" in capsys.readouterr().err


def test_a_half_copied_lora_or_merged_export_is_one_line(lora_export, tiny_model_dir, tmp_path):
    """A truncated safetensors file (a half-finished copy of an export) is refused by its header and size before
    anything loads: the LoRA file for generate --lora, a merged export's transformer for generate --model."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(lora_export, copy)
    lora = copy / "pytorch_lora_weights.safetensors"
    lora.write_bytes(lora.read_bytes()[: lora.stat().st_size // 2])
    proc = run_cli(["generate", "--model", str(tiny_model_dir), "--lora", str(copy), "--prompt", "x", "--out",
                    str(tmp_path / "v.mp4"), "--steps", "1"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "pytorch_lora_weights.safetensors: LoRA file is" in proc.stderr and "copy it again" in proc.stderr
    shard = next((copy / "transformer").glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-1])
    proc = run_cli(["generate", "--model", str(copy), "--prompt", "x", "--out", str(tmp_path / "v.mp4"), "--steps",
                    "1"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert f"{shard.name}: weights file is" in line and "where its header says" in line, line
    proc = run_cli(["eval", "--suite", "shapes-pretrain", "--model", str(copy), "--out", str(tmp_path / "eval")],
                   cwd=tmp_path, check=False)  # eval refuses it the same way, before anything loads
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert f"{shard.name}: weights file is" in line and "where its header says" in line, line


def test_export_reads_the_family_once(trained_lora_run, tmp_path, monkeypatch):
    """The export reads the base model's family once and passes it to the merged pipeline and the card
    (tests/unit/test_family_read_once.py does the other commands)."""
    import workbench.model.families as families

    reads, original = [], families.read_model_configs
    monkeypatch.setattr(families, "read_model_configs", lambda model: reads.append(str(model)) or original(model))
    from workbench.export.job import export

    result = export(str(trained_lora_run["checkpoint"]), tmp_path / "merged", merge=True, log_to_mlflow=False,
                    tracking_uri=trained_lora_run["tracking_uri"])
    assert (result.out / "model_index.json").is_file()
    assert len(reads) == 1, reads
