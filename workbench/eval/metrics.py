"""The metrics a suite names, and how a metric plugs in.

A suite lists its metrics (``metrics: [fvd, clip_score, image_fidelity, oracle]``); without the key it gets
``fvd`` and ``clip_score``, ``image_fidelity`` when it gives images and ``oracle`` when it names an oracle.

- ``fvd`` (the set's Frechet distance against the reference videos) and ``clip_score`` (frame-averaged, per
  video) are computed for every suite in this version; a list must keep them.
- ``oracle``: the suite's ``oracle:`` reads each video's attributes (workbench.eval.oracles).
- Every other name is a **per-video metric**, built-in (``image_fidelity``) or registered by another package
  under the entry point group ``workbench.metrics`` (``NAME = "package.module:factory"``, as the oracles are).
  ``factory(context)`` returns an object of the ``SuiteMetric`` protocol below; its per-video values go into each
  video's record, and from there, by name, into the means, bootstrap intervals, paired differences with the
  base model, results.json/md, MLflow (``eval/<value>``), the in-training callback and the showcase: a metric is
  one file plus its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from workbench.common import UserError

CORE = ("fvd", "clip_score")  # computed for every suite
ENTRY_POINT_GROUP = "workbench.metrics"


class MetricError(UserError, ValueError):
    """A metric a suite names that cannot be built or used; the message names it."""


@dataclass
class MetricContext:
    """What a metric may use when it is built: the suite, the suite's loaded CLIP score (``VideoCLIPScore``: its
    ``.model`` and ``.processor``) and the device."""

    suite: Any
    clip: Any
    device: Any


@runtime_checkable
class SuiteMetric(Protocol):
    """A per-video metric of a suite's videos."""

    names: tuple[str, ...]  # the values it gives each video (higher or lower is better: say so in its doc)

    def to(self, device) -> Any:
        """Move what it holds to ``device`` (the training callback evaluates on the training device)."""

    def reset(self) -> None:
        """Forget every video seen (a new evaluation)."""

    def per_video(self, batch, frames) -> list[dict[str, float]]:
        """The values of each video of ``batch`` (a workbench.eval.generation.VideoBatch: prompts, seeds, the
        conditioning images of an image-to-video suite) from ``frames`` (B, F, C, H, W) in [0, 1] on the metric's
        device: one dict ``{name: float}`` per video, with every name of ``names``."""


class ImageFidelityMetric:
    """``image_fidelity`` (workbench.metrics.image_fidelity): first-frame PSNR/SSIM against the conditioning image
    as the pipeline got it, and CLIP image similarity over the frames (higher is better)."""

    def __init__(self, context: MetricContext):
        from workbench.metrics.image_fidelity import ImageFidelity

        self.suite = context.suite
        self.metric = ImageFidelity(clip=context.clip)
        self.names = tuple(self.metric.names)

    def to(self, device):
        self.metric.to(device)
        return self

    def reset(self) -> None:
        self.metric.reset()

    def per_video(self, batch, frames) -> list[dict[str, float]]:
        if batch.images is None:
            raise MetricError(f"suite {self.suite.name}: the videos came without their conditioning images")
        before = {k: v.numel() for k, v in self.metric.per_video().items()}
        self.metric.update(frames, batch.images.to(frames.device))
        new = {k: v[before[k]:].tolist() for k, v in self.metric.per_video().items()}
        return [{k: float(new[k][j]) for k in new} for j in range(len(batch.prompts))]


BUILT_IN: dict[str, Callable[[MetricContext], SuiteMetric]] = {"image_fidelity": ImageFidelityMetric}
# what a suite must give for a built-in metric to apply
NEEDS = {"image_fidelity": ("images", "give the suite images (images: or images_file:)"),
         "oracle": ("oracle", "name an oracle (oracle:)")}


def registered() -> dict[str, Callable[[MetricContext], SuiteMetric]]:
    """Per-video metrics by name: the built-in ones and those other packages register (entry points)."""
    from importlib.metadata import entry_points

    found = dict(BUILT_IN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)  # loaded when a suite names it
    return found


def known_names() -> list[str]:
    return [*CORE, "oracle", *registered()]


def default_metrics(images: bool, oracle: bool) -> tuple[str, ...]:
    return (*CORE, *(("image_fidelity",) if images else ()), *(("oracle",) if oracle else ()))


def check_metrics(names, *, images: bool, oracle: bool) -> str | None:
    """What is wrong with a suite's ``metrics:`` list (None: nothing)."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        return "metrics must be a list of metric names"
    known = known_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        return f"metrics: unknown {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
    missing = [c for c in CORE if c not in names]
    if missing:
        return f"metrics: {' and '.join(missing)} are computed for every suite in this version: keep them in the list"
    if len(set(names)) != len(names):
        return "metrics: a metric is named twice"
    for name, (field, fix) in NEEDS.items():
        if name in names and not (images if field == "images" else oracle):
            return f"metrics: {name} needs the suite to {fix}"
    if oracle and "oracle" not in names:
        return "metrics: the suite names an oracle: add oracle to metrics (or remove oracle:)"
    return None


def load_metrics(suite, clip, device) -> list[SuiteMetric]:
    """The per-video metrics ``suite.metrics`` names, built (a third-party factory loaded from its entry point)."""
    from workbench.common import first_line

    found = registered()
    context = MetricContext(suite, clip, device)
    out = []
    for name in suite.metric_names:
        if name in CORE or name == "oracle":
            continue
        factory = found[name]
        try:
            factory = factory.load() if hasattr(factory, "load") else factory
            metric = factory(context)
        except Exception as e:  # noqa: BLE001 - a third party's package: one line naming it
            raise MetricError(f"metric {name!r}: cannot be built ({type(e).__name__}: {first_line(e)})") from None
        if not isinstance(metric, SuiteMetric):
            raise MetricError(f"metric {name!r}: {type(metric).__name__} lacks names, to, reset or per_video "
                            "(workbench.eval.metrics.SuiteMetric)")
        out.append(metric.to(device) or metric)
    return out
