"""``workbench eval --suite S.yaml --model RUN_OR_DIR``: generate a suite's videos, score them, log to MLflow."""

from __future__ import annotations

import argparse

from workbench.common import DTYPE_NAMES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="generate a suite's videos and score them (CLIP score, FVD), logged to MLflow",
        description=(
            "Generate the videos of an evaluation suite (evals/suites/*.yaml: prompts, seeds, frames, size, "
            "steps, guidance) with a model, save them as mp4, and score them: frame-averaged CLIP score against "
            "each prompt and FVD against the suite's real reference videos (statistics cached next to the suite). "
            "Writes results.json, results.md and grid.png to --out and logs everything to MLflow: on the training "
            "run for a checkpoint or run id (artifacts under eval/<suite>/), else on a new run in experiment "
            "workbench-eval. Every input is checked before generation starts. "
            "Each video and its scores are written as it finishes: the same command with the same --out continues "
            "a stopped evaluation (finished videos are not generated again; the results are those of one run). "
            "--shard I/N generates the I-th of N shares into its own --out; --merge OUT1 OUT2 ... --out FINAL "
            "(with the same --suite, --model and settings) combines finished shards into one result. "
            "See evals/README.md."
        ),
        epilog=(
            "sharded: workbench eval --suite S --model M --shard 1/2 --out part1 (and 2/2 --out part2, anywhere), "
            "then workbench eval --suite S --model M --merge part1 part2 --out final"
        ),
    )
    p.add_argument("--suite", required=True, help="suite YAML (e.g. evals/suites/smoke.yaml)")
    p.add_argument("--model", required=True, metavar="PATH_OR_RUN",
                   help="a diffusers pipeline directory (base or merged export) or hub id, a .ckpt written by "
                        "`workbench fit` (or its run directory), or an MLflow run id")
    p.add_argument("--lora", help="a diffusers LoRA file or directory (from `workbench export`) to load on --model")
    p.add_argument("--base-model", help="base model for a checkpoint (when it moved) and for --compare-base")
    p.add_argument("--compare-base", action="store_true",
                   help="also evaluate the base model with the same seeds (metrics eval/*_base, "
                        "grid base | fine-tuned)")
    p.add_argument("--clip-model", help="CLIP hub id or local directory (overrides the suite's clip_model)")
    p.add_argument("--fvd-detector", help="StyleGAN-V i3d_torchscript.pt (overrides the suite's fvd_detector)")
    p.add_argument("--reference", help="reference video folder (overrides the suite's reference)")
    p.add_argument("--out", help="results folder: new or empty, or one holding this same evaluation, which is "
                                 "continued where it stopped (default: eval-results/<suite>-<time>)")
    p.add_argument("--shard", metavar="I/N",
                   help="generate only shard I of N (counted from 1) of the suite's videos into --out; combine the "
                        "finished shards with --merge")
    p.add_argument("--merge", nargs="+", metavar="SHARD_OUT",
                   help="the --out folders of finished shards of this evaluation (same --suite, --model and "
                        "settings): combine them into --out and score them as one run, generating nothing")
    p.add_argument("--cache-dir", help="folder for cached reference statistics (default: <suite folder>/.fvd_cache)")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="write results to --out only")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=sorted(DTYPE_NAMES), help="model dtype (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks before generating (pays off from a few videos "
                        "on; see docs/performance.md)")
    p.add_argument("--attention", choices=("sdpa", "flash4", "auto"), default="sdpa",
                   help="attention kernel: sdpa (default), flash4 (FlashAttention-4, Hopper GPUs, pip install "
                        "\".[hopper]\") or auto (flash4 where it runs, else sdpa)")
    p.add_argument("--approximate", metavar="LEVER",
                   help="an approximate, faster generation, recorded in the results: first-block-cache[:THRESHOLD], "
                        "pab[:N] or faster-cache (overrides the suite's approximate; docs/performance.md measures "
                        "what each costs in quality)")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from workbench.eval.harness import evaluate

    result = evaluate(ns.suite, ns.model, lora=ns.lora, base_model=ns.base_model, compare_base=ns.compare_base,
                      clip_model=ns.clip_model, fvd_detector=ns.fvd_detector, reference=ns.reference,
                      out=ns.out, cache_dir=ns.cache_dir, tracking_uri=ns.tracking_uri,
                      log_to_mlflow=not ns.no_mlflow, device=ns.device, dtype=ns.dtype, compile=ns.compile, attention=ns.attention,
                      approximate=ns.approximate, shard=ns.shard, merge=ns.merge)
    made = f"{result.generated} generated now, {result.reused} done before"
    if result.shard is not None:
        i, n = result.shard
        print(f"suite {result.suite.name}, shard {i}/{n}: its videos are done ({made}) in {result.out}")
        print(f"when all {n} shards are done: workbench eval --suite {ns.suite} --model {ns.model} "
              f"[the same settings] --merge SHARD_OUT_1 ... SHARD_OUT_{n} --out FINAL")
        return 0
    m = result.metrics
    print(f"suite {result.suite.name}: {result.scores.num_videos} videos ({made}), "
          f"{result.scores.num_reference_videos} reference videos")
    for key in sorted(k for k in m if not k.startswith("eval/num_") and "_ci_" not in k):
        low, high = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
        interval = f"  [{low:.4f}, {high:.4f}]" if low is not None else ""
        print(f"  {key} = {m[key]:.4f}{interval}")
    if any("_ci_" in k for k in m):
        print(f"  [low, high]: {result.suite.confidence:.0%} bootstrap intervals over the videos (results.md says how)")
    comparability = result.results.get("fvd_comparability") or {}
    if comparability:
        loud = "" if comparability.get("comparable") else "NOTE: "
        print(f"{loud}FVD ({comparability['protocol']} protocol): {comparability['note']}")
    print(f"results: {result.out / 'results.md'}")
    if result.run_id:
        print(f"MLflow: run {result.run_id} in {result.tracking_uri}, artifacts under eval/{result.suite.name}/")
    return 0
