"""FSDP on the GPUs at hand: a tiny full fine-tune through the FSDP recipe's strategy settings, then
``workbench export``'s loader on the full-state-dict checkpoint it wrote.

    python benchmarks/fsdp_checkpoint.py --model TINY_DIR --data DATA_DIR --devices 1

Checks that the module's checkpoint filter, Lightning's FSDP full state dict and the exporter agree
(every trained tensor saved, loaded back, and different from the base weights).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache", default="auto", help="a prepare cache, or auto (encoded first, on the GPU)")
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()

    from workbench.train.cli import lightning_cli
    from workbench.model.checkpoint import load_finetuned
    from workbench.model.loading import load_components

    work = Path(tempfile.mkdtemp())
    strategy = work / "fsdp.yaml"
    recipe = (REPO / "recipes" / "cogvideox-2b-full-fsdp.yaml").read_text()
    strategy.write_text("trainer:\n" + recipe.split("trainer:\n", 1)[1].split("  use_distributed_sampler")[0])
    cli = lightning_cli(["fit", "--config", str(REPO / "recipes" / "tiny-cpu.yaml"), "--config", str(strategy),
                         "--trainer.accelerator", "gpu", "--trainer.devices", str(args.devices),
                         "--trainer.precision", "bf16-mixed", "--trainer.use_distributed_sampler", "false",
                         "--trainer.logger", "false", "--trainer.max_steps", "4", "--trainer.callbacks",
                         "lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.save_last", "true",
                         "--trainer.default_root_dir", str(work / "runs"), "--model.model", args.model,
                         "--model.mode", "full", "--model.encoders", "offload", "--model.learning_rate", "1e-3",
                         "--data.root", args.data, "--data.cache", args.cache, "--data.batch_size", "1"])
    trainer = cli.trainer
    if not trainer.is_global_zero:
        return 0
    ckpt = trainer.checkpoint_callback.last_model_path
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    base = load_components(args.model, load_vae=False, load_text_encoder=False).transformer.state_dict()
    tuned = load_finetuned(ckpt, load_vae=False, load_text_encoder=False).transformer.state_dict()
    changed = sum(not torch.equal(tuned[k].float(), base[k].float()) for k in base)
    print(f"checkpoint {ckpt}: {len(state)} tensors; transformer has {len(base)}; "
          f"{changed} differ from the base after loading through workbench.model.checkpoint.load_finetuned")
    ok = len(state) == len(base) and changed > 0.9 * len(base)
    print("FSDP checkpoint -> export loader:", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
