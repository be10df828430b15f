"""``workbench eval``'s job: generate a suite's videos with a model, score them, write results, log to MLflow.

Read top to bottom: the suite (workbench.eval.suite) -> the metric networks and the cached real-video
statistics (workbench.eval.reference; every input is checked there, before anything is generated) ->
generation (workbench.eval.generation: a stock ``CogVideoXPipeline``, fixed seeds, mp4 files) -> scoring
(workbench.eval.scoring: frame-averaged CLIP score per video, FVD of the set) -> results
(workbench.eval.results: ``results.json``, ``results.md``, a first-frame grid) -> MLflow (the training
run's own run when a checkpoint or run id is evaluated, else a new run in experiment ``workbench-eval``).

Long jobs survive: every video and its per-video record (workbench.eval.scoring: CLIP score, FVD features,
oracle verdict, first frame) is written atomically as it finishes; ``--out/.eval-state.json`` fingerprints
the evaluation, so the same command continues a stopped one and refuses a folder of another; the set's numbers
come from the stored records only, so resumed, sharded (``--shard I/N``) and merged (``--merge``) runs give
the results of one uninterrupted run (evals/README.md, "Stopped, resumed, sharded").

``evaluate`` is the whole job for the CLI and notebooks; the ``SuiteEvaluation`` callback
(workbench.eval.callback) runs the same generation and scoring during training, at validation.

Video convention (as in ``workbench.metrics``): float tensors (B, F, C, H, W) in [0, 1].
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from workbench.common import atomic_write_bytes, atomic_write_json, file_sha256, first_line, folder_lock
from workbench.eval.generation import generate_suite_videos, video_file_name
from workbench.eval.reference import load_suite_metrics
from workbench.eval.results import first_frame_grid, first_frame_uint8, suite_results, write_results
from workbench.eval.scoring import (
    SuiteScores, confidence_intervals, load_video_scores, record_stem, save_video_score, score_batch, set_scores,
)
from workbench.eval.sources import ModelSource, resolve_model
from workbench.eval.suite import EvalError, Suite, load_suite
from workbench.tracking.store import resolve_tracking_uri

EXPERIMENT = "workbench-eval"  # where evaluations of plain model directories go


def text_encoder_fingerprint(pipe) -> str:
    """What identifies a pipeline's text encoding: its tokenizer's vocabulary size, the encoder's config and a
    hash of its token-embedding weights (pipelines sharing these encode every prompt alike)."""
    import hashlib

    weights = pipe.text_encoder.get_input_embeddings().weight.detach().float().cpu().numpy()
    digest = hashlib.sha256(weights.tobytes()).hexdigest()
    return f"{len(pipe.tokenizer)}:{pipe.text_encoder.config.to_json_string()}:{digest}"


def mlflow_metric_name(suite_name: str, key: str) -> str:
    """``eval/fvd`` of suite ``S`` is logged as ``eval/S/fvd``: a run evaluated on several suites keeps each."""
    return f"eval/{suite_name}/{key.removeprefix('eval/')}"



def log_to_mlflow_run(uri: str, src: ModelSource, suite: Suite, out: Path, results: dict, step: int, *,
                      run_id: str | None = None, on_run=None) -> str:
    """Attach metrics, params and the out folder (artifact path ``eval/<suite>/``) to the training
    run, or to a new run in experiment ``workbench-eval``. Returns the run id.

    ``run_id``: the run an earlier, stopped attempt of this evaluation began logging to (its state file says
    so): logging goes on there, and a metric that run already holds at ``step`` with the same value is not
    logged again, so a resumed evaluation logs every metric once. ``on_run(run_id)`` is called before anything
    is logged (the harness records the run id in the state file)."""
    from mlflow import MlflowClient
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    prefix = f"eval/{suite.name}"
    params = {f"{prefix}/{k}": v for k, v in {**suite.settings(), **(results.get("provenance") or {})}.items()}
    comparable = (results.get("fvd_comparability") or {}).get("comparable")
    resumed = run_id is not None
    if src.run is not None:
        run_id, new = src.run.info.run_id, False
    else:
        if run_id is not None:
            try:
                client.get_run(run_id)
            except MlflowException:  # the stopped attempt's run is gone (deleted, another store): start afresh
                run_id, resumed = None, False
        if run_id is None:
            exp = client.get_experiment_by_name(EXPERIMENT)
            exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
            name = f"{suite.name}-{Path(src.label).name or src.label}"
            tags = {"workbench.suite": suite.name, "workbench.model": src.label}
            run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
        new = True
        params.update({"model": src.label, "lora": src.lora, "checkpoint": src.checkpoint,
                       "base_model": src.base_model})
    if on_run is not None:
        on_run(run_id)
    params = [Param(k, json.dumps(v) if isinstance(v, list) else str(v)) for k, v in params.items() if v is not None]
    try:
        client.log_batch(run_id, params=params)
    except MlflowException as e:
        # A run's params cannot change; an earlier evaluation with other settings logged them already.
        print(f"note: suite settings not logged as params of run {run_id} ({str(e).splitlines()[0][:200]}); "
              "they are in results.json", file=sys.stderr)
    for key, value in results["metrics"].items():
        name = mlflow_metric_name(suite.name, key)
        if resumed and any(m.step == step and (m.value == value or math.isnan(m.value) and math.isnan(value))
                           for m in client.get_metric_history(run_id, name)):
            continue  # logged by the stopped attempt
        client.log_metric(run_id, name, value, step=step)
    client.set_tag(run_id, f"workbench.eval.{suite.name}.out", str(out.resolve()))
    client.set_tag(run_id, f"workbench.eval.{suite.name}.fvd_comparable", str(bool(comparable)).lower())
    client.log_artifacts(run_id, str(out), prefix)
    if new:
        client.set_terminated(run_id)
    return run_id


@dataclass
class EvalResult:
    suite: Suite
    out: Path
    scores: SuiteScores | None  # None for a shard (its share is not a set to score; --merge scores the shards)
    base_scores: SuiteScores | None
    results: dict | None
    run_id: str | None
    tracking_uri: str | None
    generated: int = 0  # videos generated by this call
    reused: int = 0  # videos an earlier, stopped call (or the merged shards) had finished
    shard: tuple[int, int] | None = None

    @property
    def metrics(self) -> dict[str, float]:
        return self.results["metrics"] if self.results else {}


# -- the --out folder: a fingerprint of the evaluation, resuming, shards -----------------------------------------
STATE_FILE = ".eval-state.json"  # what evaluation the folder holds; written first, updated as it goes
STATE_FORMAT = 1


def parse_shard(text: str | tuple[int, int] | None, suite: Suite) -> tuple[int, int] | None:
    """``--shard I/N`` (1-based) -> (I, N), checked against the suite's pipeline batches (what shards split)."""
    if text is None:
        return None
    if isinstance(text, tuple):
        i, n = text
        text = f"{i}/{n}"
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if m is None:
            raise EvalError(f"--shard {text}: write it as I/N, shard I of N counted from 1 (e.g. --shard 2/4)")
        i, n = int(m[1]), int(m[2])
    if n < 1 or not 1 <= i <= n:
        raise EvalError(f"--shard {text}: I must be 1 to N (shards are counted from 1: --shard 1/{max(n, 1)} ... "
                        f"{max(n, 1)}/{max(n, 1)})")
    batches = -(-suite.num_videos // suite.batch_size)
    if n > batches:
        raise EvalError(f"--shard {text}: suite {suite.name} has {batches} pipeline batches ({suite.num_videos} videos, "
                        f"batch_size {suite.batch_size}), and shards split batches: use at most {batches} shards")
    return i, n


def _local(ref: str | os.PathLike | None) -> str | None:
    """An existing path as its absolute, resolved form (the same folder however it is written); else as given."""
    if ref is None:
        return None
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.exists() else str(ref)


def eval_fingerprint(suite: Suite, src: ModelSource, *, compare_base: bool, device, dtype: str, attention: str,
                     compile: bool) -> dict:
    """What makes two ``workbench eval`` runs the same evaluation (and their videos interchangeable): the suite's
    settings and prompts, the model (and base), and how videos are computed. JSON-normalised."""
    settings = suite.settings()
    settings.update(reference=_local(suite.reference), fvd_detector=_local(suite.fvd_detector),
                    clip_model=_local(suite.clip_model),
                    prompts_sha256=hashlib.sha256(json.dumps(list(suite.prompts)).encode()).hexdigest(),
                    images_sha256=[file_sha256(i) for i in suite.images] or None)
    model = {"model": _local(src.label), "lora": _local(src.lora), "checkpoint": _local(src.checkpoint),
             "global_step": src.global_step, "run_id": src.run.info.run_id if src.run is not None else None,
             "base_model": _local(src.base_model) if compare_base or src.checkpoint else None,
             "compare_base": compare_base}
    generation = {"device": device.type, "dtype": dtype, "attention": attention, "compile": compile}
    return json.loads(json.dumps({"suite": settings, "model": model, "generation": generation}))


def _differences(ours: dict, theirs: dict) -> list[str]:
    out = []
    for key in dict.fromkeys([*ours, *theirs]):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b)
        elif a != b:
            show = (lambda v: "(other prompts)" if key == "prompts_sha256" else json.dumps(v)[:60])
            out.append(f"{key} {show(b)} there, {show(a)} now")
    return out


def _read_state(folder: Path, flag: str) -> dict | None:
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("format") != STATE_FORMAT or not isinstance(state.get("fingerprint"), dict):
            raise ValueError(f"format {state.get('format')!r}")
    except (OSError, ValueError, AttributeError) as e:
        raise EvalError(f"{flag} {folder}: its {STATE_FILE} is unreadable ({first_line(e)}); it cannot be continued, "
                        "choose a new folder") from None
    return state


def _write_state(out: Path, state: dict) -> None:
    atomic_write_json(out / STATE_FILE, state, indent=1, what="the evaluation's state")


def _check_out(out: Path, fingerprint: dict, shard: tuple[int, int] | None) -> dict | None:
    """The state of the evaluation ``out`` holds, when it is this one (None: a new or empty folder). Another
    evaluation, another shard or a folder of other files is refused, in one line naming the folder and the fix."""
    if out.exists() and not out.is_dir():
        raise EvalError(f"--out {out}: exists and is not a folder; choose a new folder")
    state = _read_state(out, "--out") if out.is_dir() else None
    if state is None:
        if out.is_dir() and any(out.iterdir()):
            raise EvalError(f"--out {out}: exists, is not empty and holds no evaluation to continue; choose a new folder")
        return None
    diff = _differences(fingerprint, state["fingerprint"])
    if diff:
        raise EvalError(f"--out {out}: holds another evaluation (suite {state['fingerprint']['suite']['name']}; "
                        f"{'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''}); choose a new --out, or run that "
                        "evaluation's own command to continue it")
    theirs = tuple(state["shard"]) if state.get("shard") else None
    if theirs != shard:
        what = f"shard {theirs[0]}/{theirs[1]}" if theirs else "the whole suite (no --shard)"
        fix = f"--shard {theirs[0]}/{theirs[1]}" if theirs else "no --shard"
        raise EvalError(f"--out {out}: holds {what} of this evaluation; continue it with {fix}, or choose a new --out")
    return state


def _check_metrics(folder: Path, state: dict | None, metrics_fp: dict, flag: str) -> None:
    if state is not None and state.get("metrics") and state["metrics"] != metrics_fp:
        diff = _differences(metrics_fp, state["metrics"])
        raise EvalError(f"{flag} {folder}: was scored with other metric networks or reference videos ({'; '.join(diff[:2])}); "
                        "choose a new --out (or the suite's own CLIP, detector and reference)")


@dataclass
class _Stage:
    label: str  # results' column: "model", or "base" and "fine-tuned" with --compare-base
    videos: str  # folder of the mp4s under --out
    scores: str  # folder of the per-video records under --out
    load: object  # (device, dtype, compile, attention) -> pipeline


def _merge_sources(out: Path, folders, fingerprint: dict) -> list[tuple[Path, dict]]:
    sources = []
    for folder in map(Path, folders):
        if folder.resolve() == out.resolve():
            raise EvalError(f"--merge {folder}: is --out itself; merge shards into a new folder")
        state = _read_state(folder, "--merge") if folder.is_dir() else None
        if state is None:
            raise EvalError(f"--merge {folder}: not an evaluation folder (no {STATE_FILE}); pass the --out folders "
                            "of `workbench eval --shard I/N`")
        diff = _differences(fingerprint, state["fingerprint"])
        if diff:
            raise EvalError(f"--merge {folder}: a shard of another evaluation (suite "
                            f"{state['fingerprint']['suite']['name']}; {'; '.join(diff[:3])}); merge only shards made "
                            "with this suite, model and settings")
        sources.append((folder, state))
    return sources


def _merge_plan(out: Path, sources: list[tuple[Path, dict]], suite: Suite, stages: list[_Stage]) -> list:
    """What to copy from the shards into ``out``, checked before anything is written: every video of the suite
    must be finished in one of them (or in ``out`` already), else one line names the missing ones and the
    shards they belong to."""
    keys = [(i, s) for i, _, s in suite.jobs()]
    batch_of = {k: n // suite.batch_size for n, k in enumerate(keys)}
    plans = []
    for stage in stages:
        have, _ = load_video_scores(out / stage.scores, out)
        found: dict = {}
        for folder, _ in sources:
            records, _ = load_video_scores(folder / stage.scores, folder)
            for key, v in records.items():
                found.setdefault(key, (folder, v))
        missing = [k for k in keys if k not in have and k not in found]
        if missing:
            counts = {tuple(st["shard"])[1] for _, st in sources if st.get("shard")}
            shards = {tuple(st["shard"]): folder for folder, st in sources if st.get("shard")}
            where = []
            for k in missing[:4]:
                name = f"{stage.videos}/{video_file_name(*k)}"
                if len(counts) == 1:
                    n = next(iter(counts))
                    i = batch_of[k] % n + 1
                    name += (f" (shard {i}/{n} in {shards[(i, n)]} is unfinished: run its command again)"
                             if (i, n) in shards else f" (shard {i}/{n}: not among --merge)")
                where.append(name)
            raise EvalError(f"--merge: {len(missing)} of {len(keys)} videos are in none of the folders: "
                            f"{', '.join(where)}{', ...' if len(missing) > 4 else ''}; finish those shards, then merge again")
        plans.append((stage, [(k, *found[k]) for k in keys if k not in have]))
    return plans


def _merge(out: Path, plans: list) -> int:
    """Copy the planned videos and records into ``out`` (each file atomically; the JSON record last). Returns
    the number of videos copied."""
    copied = 0
    for stage, todo in plans:
        (out / stage.videos).mkdir(parents=True, exist_ok=True)
        (out / stage.scores).mkdir(parents=True, exist_ok=True)
        for key, folder, v in todo:
            stem = record_stem(*key)
            # the video, then its tensors, then its JSON record: the order a generating run writes them in
            atomic_write_bytes(out / stage.videos / v.path.name, v.path.read_bytes(), what="a video")
            for suffix in (".safetensors", ".json"):
                src = folder / stage.scores / f"{stem}{suffix}"
                atomic_write_bytes(out / stage.scores / src.name, src.read_bytes(), what="a video's scores")
            copied += 1
    return copied


def _note(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def evaluate(suite: str | os.PathLike | Suite, model: str, *, lora: str | None = None, base_model: str | None = None,
             compare_base: bool = False, clip_model: str | None = None, fvd_detector: str | None = None,
             reference: str | None = None, out: str | os.PathLike | None = None,
             cache_dir: str | os.PathLike | None = None, tracking_uri: str | None = None,
             log_to_mlflow: bool = True, device: str | None = None, dtype: str | None = None,
             progress: bool = True, compile: bool = False, attention: str = "sdpa",
             approximate: str | None = None, shard: str | tuple[int, int] | None = None,
             merge: list[str | os.PathLike] | None = None) -> EvalResult:
    """Evaluate ``model`` on ``suite``: generate, score, write results, log to MLflow.

    ``model``: a diffusers pipeline directory (or hub id; ``lora`` adds a diffusers LoRA on top), a
    ``workbench fit`` checkpoint or run directory, or an MLflow run id. ``compare_base`` also
    evaluates the base model (``base_model``, else the checkpoint's, else the LoRA's pipeline
    directory) with the same seeds. ``clip_model``/``fvd_detector``/``reference`` override the
    suite's. All inputs are checked before anything is generated (EvalError). Defaults: CUDA if available,
    bf16 there and fp32 on CPU. ``compile`` compiles the transformer blocks (regional ``torch.compile``) before
    generating; ``attention`` picks the kernel (sdpa, flash4, auto: workbench.model.attention).
    ``approximate`` overrides the suite's approximate lever (workbench.model.caching), recorded in the results.

    ``out`` (default ``eval-results/<suite>-<time>``): a new or empty folder, or one holding this same
    evaluation (suite, model, settings: the fingerprint in ``out/.eval-state.json``), which is continued: each
    video and its scores are written atomically as it finishes, finished ones are never generated again, and
    the results (computed from the stored per-video records) are those of one uninterrupted run. A finished
    evaluation is only scored and reported again, and logged to MLflow once.

    ``shard`` (``"I/N"``, 1-based): generate only the I-th of N shares of the suite's pipeline batches into
    ``out``; no results. ``merge``: the ``out`` folders of finished shards of this evaluation, combined into
    ``out`` and scored as one run (nothing is generated).
    """
    import torch

    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    suite = suite.with_overrides(clip_model=clip_model,
                                 fvd_detector=Path(fvd_detector).expanduser() if fvd_detector else None,
                                 reference=Path(reference).expanduser() if reference else None,
                                 approximate=approximate)
    shard = parse_shard(shard, suite)
    if shard is not None and merge:
        raise EvalError("--shard with --merge: a merge combines finished shards and generates nothing; leave --shard out")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or ("bf16" if device.type == "cuda" else "fp32")
    uri = resolve_tracking_uri(tracking_uri)
    src = resolve_model(model, lora=lora, base_model=base_model, compare_base=compare_base, tracking_uri=uri)
    if out is None:
        out = Path("eval-results") / f"{suite.name}-{datetime.now():%Y%m%d-%H%M%S}"
        _note(progress, f"writing to {out}: if it stops, the same command with --out {out} continues it")
    out = Path(out)
    fingerprint = eval_fingerprint(suite, src, compare_base=compare_base, device=device, dtype=dtype,
                                   attention=attention, compile=compile)
    state = _check_out(out, fingerprint, shard)
    sources = _merge_sources(out, merge or (), fingerprint)
    metrics = load_suite_metrics(suite, cache_dir=cache_dir, device=device, fallback_dir=out.parent)
    metrics_fp = json.loads(json.dumps({"provenance": metrics.provenance,
                                        "reference_statistics": metrics.cache_path.name}))
    for folder, st in [(out, state), *sources]:
        _check_metrics(folder, st, metrics_fp, "--out" if folder is out else "--merge")
    stages = [_Stage("fine-tuned" if compare_base else "model", "videos", "scores", src.load)]
    if compare_base:
        stages.insert(0, _Stage("base", "videos_base", "scores_base", src.load_base))
    plans = _merge_plan(out, sources, suite, stages) if sources else None

    out.mkdir(parents=True, exist_ok=True)
    busy = f"--out {out}: another `workbench eval` is writing to it now; wait for it to end, or choose another --out"
    with folder_lock(out, busy):
        state = _check_out(out, fingerprint, shard)  # again, under the lock: another process may have begun it
        if state is None:
            state = {"format": STATE_FORMAT, "fingerprint": fingerprint, "shard": list(shard) if shard else None,
                     "metrics": metrics_fp, "complete": False, "mlflow": None}
            _write_state(out, state)
        elif not state.get("metrics"):
            state["metrics"] = metrics_fp
            _write_state(out, state)
        if plans:
            copied = _merge(out, plans)
            _note(progress, f"{out}: merged {len(sources)} folders ({copied} videos copied)")
        return _run(suite, src, out, state, metrics, stages, shard=shard, compare_base=compare_base,
                    device=device, dtype=dtype, compile=compile, attention=attention, progress=progress,
                    log_to_mlflow=log_to_mlflow, uri=uri)


def _run(suite: Suite, src: ModelSource, out: Path, state: dict, metrics, stages: list[_Stage], *, shard,
         compare_base, device, dtype, compile, attention, progress, log_to_mlflow, uri) -> EvalResult:
    """Generate and score what ``out`` lacks (the shard's share, or all), then (not a shard) score the set from
    the stored records, write the results and log them to MLflow once."""
    import torch

    reused = 0
    rank, world = (shard[0] - 1, shard[1]) if shard else (0, 1)
    keys = [(i, s) for i, _, s in suite.jobs()]
    share = {k for n, k in enumerate(keys) if (n // suite.batch_size) % world == rank}
    generated = 0
    embeddings: dict = {}  # per text encoder: the base and a fine-tune share T5, so each prompt is encoded once
    for stage in stages:
        done, problems = load_video_scores(out / stage.scores, out)
        for problem in problems:
            print(f"warning: {out / stage.scores}: {problem}; that video is generated again", file=sys.stderr)
        done = {k: v for k, v in done.items() if k in share}
        reused += len(done)
        if len(done) == len(share):
            continue
        if done:
            _note(progress, f"{out}: {len(done)} of {len(share)} videos ({stage.label}) already done; generating "
                            f"the other {len(share) - len(done)}")
        pipe = stage.load(device, dtype, compile, attention)
        desc = f"{suite.name} ({stage.label}" + (f", shard {shard[0]}/{shard[1]})" if shard else ")")
        metrics.reset()
        batches = generate_suite_videos(pipe, suite, out / stage.videos, progress=progress, desc=desc, rank=rank,
                                        world_size=world, done=set(done),
                                        embeddings=embeddings.setdefault(text_encoder_fingerprint(pipe), {}))
        for batch in batches:
            for k, v in enumerate(score_batch(metrics, batch)):
                if v.key in done:
                    continue  # a finished video of a batch generated again whole: its files stay as they are
                if v.seed == suite.seeds[0]:
                    v.first_frame = first_frame_uint8(batch.frames[k, 0])
                save_video_score(v, out / stage.scores, out)
                generated += 1
            metrics.reset()
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if shard is not None:
        state["complete"] = True
        _write_state(out, state)
        return EvalResult(suite, out, None, None, None, None, None, generated, reused, shard)

    scores: dict[str, SuiteScores] = {}
    frames: dict[str, list] = {}
    for stage in stages:
        found, _ = load_video_scores(out / stage.scores, out)
        missing = [k for k in keys if k not in found]
        if missing:  # only if files vanished while it ran
            raise EvalError(f"--out {out}: {len(missing)} videos of {stage.videos}/ have no scores; run the same "
                            "command again to generate them")
        scores[stage.label] = set_scores(metrics, [found[k] for k in keys])
        frames[stage.label] = [found[(i, suite.seeds[0])].first_frame for i in range(len(suite.prompts))]
    model_scores = scores["fine-tuned" if compare_base else "model"]
    base_scores = scores.get("base")

    if suite.path is not None:
        atomic_write_bytes(out / "suite.yaml", suite.path.read_bytes(), what="the suite file")
    first_frame_grid(frames, out / "grid.png")
    logged = state.get("mlflow") or {}
    info = {"model": src.label, "lora": str(src.lora) if src.lora else None,
            "checkpoint": str(src.checkpoint) if src.checkpoint else None, "global_step": src.global_step,
            "base_model": src.base_model if compare_base or src.checkpoint else None,
            "run_id": src.run.info.run_id if src.run is not None else (logged.get("run_id") if logged.get("done")
                                                                        else None),
            "reference_statistics": str(metrics.cache_path), "provenance": metrics.provenance}
    intervals = confidence_intervals(model_scores, base_scores, confidence=suite.confidence,
                                     num_resamples=suite.bootstrap_resamples, seed=suite.bootstrap_seed)
    results = suite_results(suite, model_scores, base_scores, out=out, info=info, intervals=intervals)
    write_results(out, results)
    state["complete"] = True
    _write_state(out, state)
    run_id = None
    if log_to_mlflow:
        if logged.get("done") and logged.get("tracking_uri") == uri:
            run_id = logged["run_id"]
            _note(progress, f"note: this evaluation was logged to MLflow run {run_id} already; not logged again")
        else:
            def pending(rid: str) -> None:  # recorded before logging: a stopped logging goes on in the same run
                state["mlflow"] = {"tracking_uri": uri, "run_id": rid, "done": False}
                _write_state(out, state)

            earlier = logged.get("run_id") if logged.get("tracking_uri") == uri else None
            run_id = log_to_mlflow_run(uri, src, suite, out, results, step=src.global_step or 0, run_id=earlier,
                                       on_run=pending)
            state["mlflow"] = {"tracking_uri": uri, "run_id": run_id, "done": True}
            _write_state(out, state)
        if results["run_id"] != run_id:
            results["run_id"] = run_id
            write_results(out, results)
    return EvalResult(suite, out, model_scores, base_scores, results, run_id, uri if log_to_mlflow else None,
                      generated, reused)
