"""The wheel carries everything the package reads at run time: built from the checkout (no network: hatchling
from the dev extra, no build isolation), installed into a fresh environment (its other dependencies seen
from this one's site-packages), run from a folder outside the checkout with no PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    pytest.importorskip("hatchling", reason="hatchling (the dev extra) builds the wheel")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(dist), str(ROOT)], check=True, timeout=120, cwd=tmp_path)
    wheel = next(dist.glob("cogvideox_workbench-*.whl"))
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # this environment's dependencies (torch, diffusers, ...) by a path entry: its site-packages' own .pth files
    # (the checkout's editable install among them) are not run from there, so only the wheel provides workbench
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "outer-dependencies.pth").write_text("\n".join(sorted(outer)) + "\n")
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    clean["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{clean.get('PATH', '')}"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, timeout=120, env=clean, cwd=tmp_path)
    away = tmp_path / "elsewhere"
    away.mkdir()

    def run(*args: str) -> str:
        r = subprocess.run(list(args), capture_output=True, text=True, timeout=180, env=clean, cwd=away)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    where = run(str(python), "-c", "import workbench, sys; print(workbench.__file__)").strip()
    assert Path(where).is_relative_to(env_dir), where  # the wheel's package, not the checkout's
    run(str(env_dir / "bin" / "workbench"), "data", "sample", "sample")
    assert (away / "sample" / "metadata.jsonl").is_file()
    out = run(str(python), "-c", """
from pathlib import Path
from workbench.eval.suite import load_suite, suite_path
from workbench.train.recipes import recipe_path
from workbench.shapes.miniature import CLIP_DIR, DETECTOR_PATH, MINIATURE_DIR
from workbench.review.app import STATIC
for name in ("shapes-held-out", "shapes-pretrain", "smoke", "domain", "evals/suites/smoke.yaml"):
    path = suite_path(name)
    assert "_suites" in str(path), path
    suite = load_suite(path)
    assert suite.prompts, name
    for net in (suite.clip_model, suite.fvd_detector):  # the shapes suites' metric networks: the wheel's own files
        if net is not None and name.startswith("shapes"):
            assert Path(net).exists() and "site-packages" in str(net), (name, net)
assert "_recipes" in str(recipe_path("shapes-lora-cpu"))
for p in (CLIP_DIR, DETECTOR_PATH, MINIATURE_DIR, STATIC / "review.js", STATIC / "review.html", STATIC / "review.css"):
    assert Path(p).exists(), p
print("ok", suite_path("shapes-held-out"))
""")
    assert out.startswith("ok") and str(env_dir) in out
    run(str(env_dir / "bin" / "workbench"), "review", "--help")
