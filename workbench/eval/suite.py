"""An evaluation suite: what to generate, how, and what to compare it with (evals/suites/*.yaml)."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workbench.common import UserError, first_line, yaml_error_place
from workbench.model.families.cogvideox_2b import CogVideoX2B

# A suite that names no clip generates CogVideoX-2B's native one (where the project started); a model whose
# family cannot take the suite's clip stops before generating (workbench.eval.generation).
NATIVE = CogVideoX2B.native

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
SCHEDULERS = ("dpm", "ddim")
PROTOCOLS = ("workbench", "stylegan-v")
DETECTOR_KINDS = ("i3d", "videomae")


class EvalError(UserError):
    """Bad input to an evaluation (suite, paths, model); printed without a traceback."""


class SuiteError(EvalError, ValueError):
    """A suite file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Suite:
    """An evaluation suite: what to generate, how, and what to compare it with.

    Every prompt is generated once per seed (the same seeds for every prompt and every model).
    ``reference`` is a dataset folder of real videos (any layout ``read_manifest`` reads);
    ``clip_model`` a hub id or local CLIP directory; ``fvd_detector`` StyleGAN-V's
    ``i3d_torchscript.pt``. ``batch_size`` is videos per pipeline call. ``scheduler`` is the
    sampler, built from the model's own scheduler config: ``dpm`` (CogVideoXDPMScheduler, what the
    training module's pipeline and the diffusers trainer's validation use) or ``ddim``. ``approximate``
    names an approximate inference lever (workbench.model.caching: ``first-block-cache[:T]``, ``pab[:N]``,
    ``faster-cache``); None generates exactly. ``images`` (image-to-video models, which need them; text-to-video
    models refuse them): one conditioning image per prompt, which every seed of the prompt animates; such a
    suite also reports first-frame PSNR/SSIM and CLIP image similarity (workbench.metrics.image_fidelity).
    """

    name: str
    prompts: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    num_frames: int = NATIVE.num_frames
    height: int = NATIVE.height
    width: int = NATIVE.width
    fps: float = NATIVE.fps
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    batch_size: int = 1
    scheduler: str = "dpm"
    reference: Path | None = None
    clip_model: str | None = DEFAULT_CLIP_MODEL
    fvd_detector: Path | None = None
    oracle: str | None = None
    images: tuple[Path, ...] = ()  # image-to-video: the conditioning image of each prompt (``images:``/``images_file:``)
    protocol: str = "workbench"
    fvd_detector_kind: str = "i3d"
    confidence: float = 0.95
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    approximate: str | None = None
    description: str = ""
    metrics: tuple[str, ...] = ()  # the metrics it reports (workbench.eval.metrics); () = the default list
    path: Path | None = None  # the YAML file it was read from

    def __post_init__(self) -> None:
        from workbench.metrics.fvd import I3D_NUM_FRAMES

        where = str(self.path) if self.path else f"suite {self.name!r}"

        def fail(msg: str):
            raise SuiteError(f"{where}: {msg}")

        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            fail(f"name={self.name!r}: use letters, digits, '_', '.', '-' (it names MLflow artifact folders)")
        if isinstance(self.prompts, str) or isinstance(self.seeds, (str, int)):
            fail("prompts and seeds must be lists")
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        if not self.prompts:
            fail("the suite has no prompts; list them under `prompts:` (or point `prompts_file:` at a text file)")
        for i, p in enumerate(self.prompts):
            if not isinstance(p, str) or not p.strip():
                fail(f"prompts[{i}] is empty or not text: {p!r}")
        if not self.seeds:
            fail("seeds is empty; give at least one integer seed")
        if any(not _is_int(s) for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            fail(f"seeds={list(self.seeds)}: must be distinct integers")
        for key in ("num_frames", "height", "width", "num_inference_steps", "batch_size"):
            value = getattr(self, key)
            if not _is_int(value) or value < 1:
                fail(f"{key}={value!r}: must be a positive integer")
        if (self.num_frames - 1) % 4:
            fail(f"num_frames={self.num_frames}: CogVideoX needs 4k+1 frames (17, 49, ...)")
        if self.num_frames < I3D_NUM_FRAMES:
            fail(f"num_frames={self.num_frames}: FVD's I3D detector needs {I3D_NUM_FRAMES}-frame clips; "
                 "use 17 or more (4k+1)")
        if self.height % 16 or self.width % 16:
            fail(f"{self.height}x{self.width}: height and width must be multiples of 16")
        if not isinstance(self.fps, (int, float)) or isinstance(self.fps, bool) or self.fps <= 0:
            fail(f"fps={self.fps!r}: must be a positive number")
        if not isinstance(self.guidance_scale, (int, float)) or isinstance(self.guidance_scale, bool) \
                or self.guidance_scale < 0:
            fail(f"guidance_scale={self.guidance_scale!r}: must be a number >= 0 (1 or less turns guidance off)")
        if self.scheduler not in SCHEDULERS:
            fail(f"scheduler={self.scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
        if self.protocol not in PROTOCOLS:
            fail(f"protocol={self.protocol!r}: choose one of {', '.join(PROTOCOLS)} (evals/README.md, \"FVD protocols\")")
        if self.fvd_detector_kind not in DETECTOR_KINDS:
            fail(f"fvd_detector_kind={self.fvd_detector_kind!r}: choose one of {', '.join(DETECTOR_KINDS)}")
        if self.protocol == "stylegan-v" and self.fvd_detector_kind != "i3d":
            fail("protocol: stylegan-v measures FVD with StyleGAN-V's I3D; set fvd_detector_kind: i3d")
        if not isinstance(self.confidence, float) or not 0.5 <= self.confidence < 1:
            fail(f"confidence={self.confidence!r}: the bootstrap intervals' level, a number in [0.5, 1), e.g. 0.95")
        if not _is_int(self.bootstrap_resamples) or self.bootstrap_resamples < 100:
            fail(f"bootstrap_resamples={self.bootstrap_resamples!r}: an integer >= 100 (1000 is the default)")
        if not _is_int(self.bootstrap_seed):
            fail(f"bootstrap_seed={self.bootstrap_seed!r}: must be an integer")
        if self.approximate is not None:
            from workbench.model.caching import ApproximationError, parse_approximation

            try:
                parse_approximation(self.approximate)
            except ApproximationError as e:
                fail(f"{e} (or leave it out: exact generation)")
        if isinstance(self.metrics, (str, bytes)) or not isinstance(self.metrics, (tuple, list)):
            fail("metrics must be a list of metric names, e.g. [fvd, clip_score, image_fidelity]")
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if self.metrics:
            from workbench.eval.metrics import check_metrics

            problem = check_metrics(self.metrics, images=bool(self.images), oracle=self.oracle is not None)
            if problem:
                fail(problem)
        if self.oracle is not None:
            from workbench.eval.oracles import oracles

            known = oracles()
            if self.oracle not in known:
                fail(f"oracle={self.oracle!r}: choose one of {', '.join(known) or 'none installed'} (or leave it out)")
            oracle = known[self.oracle]
            for i, p in enumerate(self.prompts):
                if oracle.parse_prompt(p) is None:
                    fail(f"prompts[{i}] {p!r} is not a prompt oracle: {self.oracle} reads ({oracle.prompt_help})")
        if isinstance(self.images, (str, os.PathLike)):
            fail("images must be a list of paths, one per prompt")
        object.__setattr__(self, "images", tuple(Path(i) for i in self.images))
        if self.images:
            if len(self.images) != len(self.prompts):
                fail(f"{len(self.images)} images for {len(self.prompts)} prompts: give one image per prompt "
                     "(images: or images_file:, in the prompts' order)")
            missing = [str(i) for i in self.images if not i.is_file()]
            if missing:
                fail(f"image {missing[0]} does not exist" + (f" (and {len(missing) - 1} more)" if len(missing) > 1
                                                              else "") + "; paths are relative to the suite file")
        if self.num_videos < 2:
            fail(f"{self.num_videos} video: FVD needs at least 2 generated videos for a covariance; "
                 "add prompts or seeds")

    @property
    def num_videos(self) -> int:
        return len(self.prompts) * len(self.seeds)

    def jobs(self) -> list[tuple[int, str, int]]:
        """(prompt index, prompt, seed) for every video, prompt by prompt."""
        return [(i, p, s) for i, p in enumerate(self.prompts) for s in self.seeds]

    def with_overrides(self, **changes: Any) -> Suite:
        """A copy with the non-None ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics it reports: its ``metrics:`` list, else fvd and clip_score, image_fidelity with images and
        oracle with an oracle (workbench.eval.metrics)."""
        from workbench.eval.metrics import default_metrics

        return self.metrics or default_metrics(bool(self.images), self.oracle is not None)

    def settings(self) -> dict[str, Any]:
        """Flat, JSON-able settings (MLflow params, results.json)."""
        return {
            "name": self.name, "num_prompts": len(self.prompts), "seeds": list(self.seeds),
            "num_videos": self.num_videos, "num_frames": self.num_frames, "height": self.height,
            "width": self.width, "fps": self.fps, "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale, "scheduler": self.scheduler, "batch_size": self.batch_size,
            "reference": str(self.reference) if self.reference else None, "clip_model": self.clip_model,
            "fvd_detector": str(self.fvd_detector) if self.fvd_detector else None, "oracle": self.oracle,
            "protocol": self.protocol, "fvd_detector_kind": self.fvd_detector_kind,
            "confidence": self.confidence, "bootstrap_resamples": self.bootstrap_resamples,
            "bootstrap_seed": self.bootstrap_seed, "approximate": self.approximate,
            "num_images": len(self.images), "metrics": list(self.metric_names),
        }

    def conditioning_images(self) -> list:
        """Each prompt's image decoded (PIL RGB), checked before any video is generated: a SuiteError naming the
        file when one does not decode."""
        from workbench.common import ImageUnreadable, open_rgb_image

        where = str(self.path) if self.path else f"suite {self.name!r}"
        out = []
        for i, image in enumerate(self.images):
            try:
                out.append(open_rgb_image(image))
            except FileNotFoundError:
                raise SuiteError(f"{where}: images[{i}] {image} does not exist") from None
            except ImageUnreadable as e:
                raise SuiteError(f"{where}: images[{i}] {image} is not a readable image ({e}); use PNG or JPEG") from None
        return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ``review``: what ``workbench review`` asks reviewers beyond "which is better" (``criteria:``, a list of questions);
# read by workbench/review/session.py from the suite file, not by the evaluation
_SUITE_KEYS = {f.name for f in dataclasses.fields(Suite)} - {"path"} | {"prompts_file", "images_file", "review"}


PACKAGE_PREFIX = "package:"  # `package:shapes/weights/...`: inside the installed workbench package (checkout or wheel)


def _suite_path(value: Any, base: Path, key: str, where: Path) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise SuiteError(f"{where}: {key} must be a path, got {value!r}")
    if str(value).startswith(PACKAGE_PREFIX):  # the package's own files, wherever it is installed
        return _PACKAGE / str(value)[len(PACKAGE_PREFIX):].lstrip("/")
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(base / path))


def _clip_model_ref(value: Any, base: Path, where: Path) -> str:
    """A hub id stays as it is; ``./x``, ``../x``, ``/x``, ``~/x`` or an existing ``base/x`` is a local path."""
    if not isinstance(value, str) or not value.strip():
        raise SuiteError(f"{where}: clip_model must be a hub id or a path, got {value!r}")
    if value.startswith((".", "/", "~", PACKAGE_PREFIX)) or (base / value).exists():
        # absolute, so a relative "dir/name" is never mistaken for a hub id
        return str(_suite_path(value, base, "clip_model", where).absolute())
    return value


def _read_utf8(path: Path, what: str) -> str:
    """The text of a suite's file (a UTF-8 byte-order mark dropped); a SuiteError naming the line when it is not
    UTF-8 or cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SuiteError(f"{path}: the {what} cannot be read ({e.strerror or first_line(e)})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SuiteError(f"{path}:{line}: the {what} is not UTF-8 text (byte 0x{data[e.start]:02x}); re-save it as "
                         "UTF-8") from None


_PACKAGE = Path(__file__).resolve().parents[1]  # workbench/


def suite_folders() -> tuple[Path, ...]:
    """Where bundled suites are looked up: ./evals/suites, the checkout's evals/suites, the wheel's _suites/."""
    return (Path.cwd() / "evals" / "suites", _PACKAGE.parent / "evals" / "suites", _PACKAGE / "_suites")


def suite_path(name: str | os.PathLike) -> Path:
    """``name`` as a path if it exists, else the bundled suite of that name (``shapes-held-out`` or
    ``evals/suites/shapes-held-out.yaml``) from the checkout or the installed package; else ``name`` as given."""
    direct = Path(name)
    if direct.is_file():
        return direct
    stem = direct.name if direct.suffix in (".yaml", ".yml") else f"{direct.name}.yaml"
    for folder in suite_folders():
        if (folder / stem).is_file():
            return folder / stem
    return direct


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and validate a suite YAML (see evals/README.md for the fields).

    Relative paths (reference, fvd_detector, prompts_file, a local clip_model written ``./...`` or
    ``../...``) are resolved against the suite file's folder.
    """
    path = suite_path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: no such suite file (suites live in evals/suites/*.yaml; bundled: "
                         f"{', '.join(sorted({p.stem for f in suite_folders() if f.is_dir() for p in f.glob('*.yaml')}))})")
    try:
        data = yaml.safe_load(_read_utf8(path, "suite"))
    except yaml.YAMLError as e:
        raise SuiteError(f"{yaml_error_place(path, e)}: not valid YAML ({getattr(e, 'problem', None) or first_line(e)}); "
                         "fix the line (indentation, a missing ':' or an unquoted ':' in a prompt)") from None
    except RecursionError:
        raise SuiteError(f"{path}: not valid YAML (nested too deeply); a suite is a mapping of fields "
                         "(evals/README.md)") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite is a YAML mapping of fields, got {type(data).__name__}")
    not_text = [k for k in data if not isinstance(k, str)]
    if not_text:
        raise SuiteError(f"{path}: field name {not_text[0]!r} is not text; known fields: "
                         f"{', '.join(sorted(_SUITE_KEYS))}")
    unknown = sorted(set(data) - _SUITE_KEYS)
    if unknown:
        raise SuiteError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_SUITE_KEYS))}")
    base = path.parent
    fields = dict(data)
    fields.pop("review", None)
    fields.setdefault("name", path.stem)
    prompts = fields.pop("prompts", None) or []
    if not isinstance(prompts, list):
        raise SuiteError(f"{path}: prompts must be a list of strings")
    if fields.get("prompts_file") is not None:
        prompts_file = _suite_path(fields.pop("prompts_file"), base, "prompts_file", path)
        if not prompts_file.is_file():
            raise SuiteError(f"{path}: prompts_file {prompts_file} does not exist")
        prompts = prompts + [line.strip() for line in _read_utf8(prompts_file, "prompts_file").splitlines()
                             if line.strip()]
    fields.pop("prompts_file", None)
    fields["prompts"] = tuple(prompts)
    images = fields.pop("images", None) or []
    if not isinstance(images, list):
        raise SuiteError(f"{path}: images must be a list of paths, one per prompt")
    images = [_suite_path(i, base, f"images[{k}]", path) for k, i in enumerate(images)]
    if fields.get("images_file") is not None:  # one path a line, relative to the images file's folder
        images_file = _suite_path(fields.pop("images_file"), base, "images_file", path)
        if not images_file.is_file():
            raise SuiteError(f"{path}: images_file {images_file} does not exist")
        images += [_suite_path(line.strip(), images_file.parent, "images_file", images_file)
                   for line in _read_utf8(images_file, "images_file").splitlines() if line.strip()]
    fields.pop("images_file", None)
    fields["images"] = tuple(images)
    seeds = fields.get("seeds", [0])
    fields["seeds"] = tuple(seeds) if isinstance(seeds, list) else (seeds,)
    for key in ("reference", "fvd_detector"):
        if fields.get(key) is not None:
            fields[key] = _suite_path(fields[key], base, key, path)
    if fields.get("clip_model") is not None:
        fields["clip_model"] = _clip_model_ref(fields["clip_model"], base, path)
    else:
        fields.pop("clip_model", None)
    if "description" in fields:
        fields["description"] = str(fields["description"] or "").strip()
    return Suite(path=path, **fields)
