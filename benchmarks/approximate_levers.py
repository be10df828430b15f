"""What each approximate inference lever costs in quality and saves in time, in the shapes world.

    python benchmarks/approximate_levers.py [--out benchmarks/results/approximate_levers_shapes_cpu.json]

The shipped miniature CogVideoX (base, as pretrained) generates the `shapes-pretrain` suite (12 prompts x 2
seeds = 24 videos, 17 frames 64x64, DPM 25 steps, guidance 6) exactly, then once per lever: diffusers' caching
hooks as the suite's `approximate` setting (workbench.model.caching) and fewer sampler steps. Each set is
scored the way `workbench eval` scores it: the oracle's prompt accuracy, FVD against 24 real clips with the
detector learned for this world, CLIP score, each with its 95 % bootstrap interval, plus the paired FVD
difference against the exact set (same prompts and seeds). Time is the generation's wall time in this process,
the pipeline warmed up first, on whatever device runs it (CUDA if available, else the CPU), and the share of
the transformer's work each lever still does (attention calls and feed-forward calls, counted, against the
exact set's): on the miniature the VAE decode and the per-step overhead are a large part of the time, so the
work share says more than its wall time about what a lever would save at real size.

What it does not measure: the speed-up at real size (49x480x720, 1.69B parameters), where attention is a
larger share of a step than in the miniature, so attention-skipping levers (pab, faster-cache) save more there;
that needs a GPU run of this same script with `--model THUDM/CogVideoX-2b` and a real suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LEVERS = (  # (label, suite overrides)
    ("exact (DPM, 25 steps)", {}),
    ("first-block-cache:0.05", {"approximate": "first-block-cache:0.05"}),
    ("first-block-cache:0.1", {"approximate": "first-block-cache:0.1"}),
    ("first-block-cache:0.2", {"approximate": "first-block-cache:0.2"}),
    ("first-block-cache:0.5", {"approximate": "first-block-cache:0.5"}),
    ("pab:2", {"approximate": "pab:2"}),
    ("pab:3", {"approximate": "pab:3"}),
    ("faster-cache", {"approximate": "faster-cache"}),
    ("DPM, 12 steps", {"num_inference_steps": 12}),
    ("DDIM, 12 steps", {"num_inference_steps": 12, "scheduler": "ddim"}),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "approximate_levers_shapes_cpu.json"))
    parser.add_argument("--work", help="folder for the reference clips and videos (default: a temporary one)")
    args = parser.parse_args()

    import torch

    from workbench.commands.quickstart import write_quickstart_data
    from workbench.eval.generation import generate_suite_videos, prompt_embeddings
    from workbench.eval.reference import load_suite_metrics
    from workbench.eval.scoring import confidence_intervals, score_videos
    from workbench.eval.suite import load_suite
    from workbench.metrics.bootstrap import bootstrap_mean
    from workbench.model.pipeline import load_pipeline
    from workbench.model.families import family_of_model
    from workbench.shapes.miniature import CLIP_DIR, DETECTOR_PATH, MINIATURE_DIR

    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(args.work or tempfile.mkdtemp(prefix="levers-"))
    paths = write_quickstart_data(work)
    suite = load_suite(REPO / "evals" / "suites" / "shapes-pretrain.yaml").with_overrides(
        seeds=(0, 1), reference=paths["reference/pretrain"], clip_model=str(CLIP_DIR), fvd_detector=DETECTOR_PATH)
    metrics = load_suite_metrics(suite, cache_dir=work / "fvd-cache", device=device)
    pipe = load_pipeline(str(MINIATURE_DIR), device=device, dtype="fp32", family=family_of_model(str(MINIATURE_DIR)))
    pipe.set_progress_bar_config(disable=True)
    embeddings: dict = {}  # every prompt's T5 embeddings, encoded before any timing (T5 is not what is measured)
    prompt_embeddings(pipe, list(suite.prompts), embeddings, pipe.transformer.config.max_text_seq_length,
                      suite.guidance_scale > 1)
    list(generate_suite_videos(pipe, suite.with_overrides(prompts=suite.prompts[:1], seeds=(0, 1), batch_size=2),
                               progress=False, embeddings=embeddings))  # warm-up

    rows, exact = [], None
    for label, overrides in LEVERS:
        s = suite.with_overrides(**overrides)
        batches, counts = [], {"attention": 0, "feed_forward": 0}
        sdpa = torch.nn.functional.scaled_dot_product_attention

        def counted_sdpa(*a, **k):  # diffusers' CogVideoX processor calls F.scaled_dot_product_attention
            counts["attention"] += 1
            return sdpa(*a, **k)

        hooks = [block.ff.register_forward_hook(lambda *_: counts.__setitem__("feed_forward", counts["feed_forward"] + 1))
                 for block in pipe.transformer.transformer_blocks]
        torch.nn.functional.scaled_dot_product_attention = counted_sdpa
        start = time.perf_counter()
        try:
            for batch in generate_suite_videos(pipe, s, progress=False, embeddings=embeddings):
                batches.append(batch)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        finally:
            torch.nn.functional.scaled_dot_product_attention = sdpa
            for hook in hooks:
                hook.remove()
        scores = score_videos(metrics, batches)
        intervals = confidence_intervals(scores, exact, confidence=0.95, num_resamples=1000, seed=0)
        m = scores.metrics()
        row = {"lever": label, "overrides": overrides, "seconds": round(seconds, 2), **counts,
               "seconds_per_video": round(seconds / scores.num_videos, 3),
               "clip_score": round(m["eval/clip_score"], 3), "fvd": round(m["eval/fvd"], 2),
               "fvd_ci": [round(intervals["fvd"].low, 2), round(intervals["fvd"].high, 2)]}
        for attribute in ("colour", "shape", "direction", "all"):
            ok = [float(v.oracle["ok"][attribute]) for v in scores.videos]
            ci = bootstrap_mean(ok, num_resamples=10_000, confidence=0.95, seed=0)
            row[f"accuracy/{attribute}"] = round(m[f"eval/accuracy/{attribute}"], 4)
            row[f"accuracy/{attribute}_ci"] = [round(ci.low, 4), round(ci.high, 4)]
        if exact is None:
            exact, exact_seconds, exact_counts = scores, seconds, dict(counts)
        else:
            d = intervals["fvd_difference"]
            row["fvd_minus_exact"] = round(d.value, 2)
            row["fvd_minus_exact_ci"] = [round(d.low, 2), round(d.high, 2)]
        row["speedup"] = round(exact_seconds / seconds, 2)
        # the share of the transformer's work done: attention calls and feed-forward calls against the exact set's
        # (hardware-independent; at real size the transformer is ~90 % of a video's time, docs/performance.md)
        row["attention_share"] = round(counts["attention"] / exact_counts["attention"], 3)
        row["feed_forward_share"] = round(counts["feed_forward"] / exact_counts["feed_forward"], 3)
        rows.append(row)
        print(f"{label:24s} {row['seconds_per_video']:6.3f} s/video  x{row['speedup']:.2f}  "
              f"attn {row['attention_share']:.0%} ff {row['feed_forward_share']:.0%}  "
              f"colour {row['accuracy/colour']:.0%} direction {row['accuracy/direction']:.0%} "
              f"all {row['accuracy/all']:.0%}  FVD {row['fvd']:.1f} {row['fvd_ci']}  "
              f"Δ {row.get('fvd_minus_exact', 0):+.1f} {row.get('fvd_minus_exact_ci', '')}", flush=True)

    result = {"benchmark": "approximate_levers", "command": "python benchmarks/approximate_levers.py",
              "model": "workbench/shapes/weights/miniature (base)", "suite": f"{suite.name} x seeds (0, 1)",
              "num_videos": exact.num_videos, "device": torch.cuda.get_device_name() if device == "cuda" else
              f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
              "torch": torch.__version__, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
