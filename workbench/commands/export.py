"""``workbench export CHECKPOINT_OR_RUN --out DIR``: a fine-tune as files stock diffusers loads, published."""

from __future__ import annotations

import argparse
import sys

from workbench.common import DTYPE_NAMES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a fine-tune: LoRA file, merged pipeline, model card, MLflow registry, hub",
        description=(
            "Export a `workbench fit` checkpoint: the LoRA adapter as pytorch_lora_weights.safetensors "
            "(stock CogVideoXPipeline.load_lora_weights), with --merge (always for full fine-tunes) a complete "
            "pipeline (CogVideoXPipeline.from_pretrained), a model card README.md and export.json (file list, "
            "sha256). The directory appears only when complete. The export is logged to the training run's "
            "MLflow artifacts under export/ and registered as a model version. --push-to-hub REPO then creates "
            "the hub repo (if missing) and uploads the directory, with the token of `hf auth login` or $HF_TOKEN."
        ),
    )
    p.add_argument("source", metavar="CHECKPOINT_OR_RUN",
                   help="a .ckpt written by `workbench fit`, a run directory, or an MLflow run id "
                        "(its checkpoints/last.ckpt)")
    p.add_argument("--out", required=True, help="export directory (created; must not hold an export)")
    p.add_argument("--merge", action="store_true",
                   help="also write the complete pipeline with the LoRA merged into the transformer")
    p.add_argument("--base-model", help="base model to use instead of the checkpoint's recorded one "
                                         "(hub id or diffusers directory; when it moved)")
    p.add_argument("--base-model-id", help="hub id of the base model for the model card when the base is a "
                                            "local copy (e.g. THUDM/CogVideoX-2b); sets base_model and license")
    p.add_argument("--dtype", choices=sorted(DTYPE_NAMES), default="fp32",
                   help="dtype of the merged pipeline's weights (default fp32; bf16/fp16 halve its size)")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--registered-name", help="MLflow registered model name (default: <experiment>-<mode>)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the export to MLflow or register it")
    p.add_argument("--push-to-hub", metavar="REPO",
                   help="upload the finished export to the Hugging Face Hub model repo REPO (user/name); "
                        "needs network and a token (`hf auth login` or $HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="create the hub repo as private")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export at --out")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from workbench.export.job import export
    from workbench.export.publish import ARTIFACT_DIR

    result = export(ns.source, ns.out, merge=ns.merge, base_model=ns.base_model, base_model_id=ns.base_model_id,
                    dtype=ns.dtype, tracking_uri=ns.tracking_uri, log_to_mlflow=not ns.no_mlflow,
                    registered_name=ns.registered_name, hub_repo=ns.push_to_hub, private=ns.private,
                    overwrite=ns.overwrite)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"exported {result.mode} fine-tune to {result.out}")
    for name in result.files:
        print(f"  {name}")
    if result.registered:
        print(f"MLflow: logged to run {result.run_id} under {ARTIFACT_DIR}/, registered as "
              f"{result.registered[0]} version {result.registered[1]}")
    if result.hub_url:
        print(f"pushed to {result.hub_url}")
    return 0
