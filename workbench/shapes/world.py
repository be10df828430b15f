"""The shapes world: captioned clips of one coloured shape moving in a straight line.

A synthetic domain the project owns, in which a real (miniature) CogVideoX is trained, fine-tuned
and judged (docs/shapes-world.md). A clip is described by a ``Scene`` (colour, shape, direction, plus
size, speed and offset that the caption does not name); ``render`` draws it at any size and frame
count and ``caption`` names what moves and where.

Domains: the pretraining domain uses the colours in ``PRETRAIN_COLOURS``; ``yellow`` is held out
(``HELD_OUT_COLOURS``): the miniature never sees a yellow shape while its transformer is trained, so
drawing one is what a fine-tune must teach. Every colour, yellow included, is in the data the VAE and
the metric networks are trained on, as CogVideoX's VAE is generic: a VAE that never saw yellow decodes
it as olive and no fine-tune of the transformer could then produce it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product

import numpy as np

BACKGROUND = (12, 12, 20)
COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 240), "yellow": (240, 220, 40)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left to right": (1, 0), "right to left": (-1, 0), "top to bottom": (0, 1), "bottom to top": (0, -1)}

PRETRAIN_COLOURS = ("red", "green", "blue")
HELD_OUT_COLOURS = ("yellow",)
DOMAINS = {"pretrain": PRETRAIN_COLOURS, "held_out": HELD_OUT_COLOURS, "all": tuple(COLOURS)}

CAPTION = "a {colour} {shape} moving from {direction} on a dark background"


@dataclass(frozen=True)
class Scene:
    """One clip of the world. ``size`` is the shape's radius as a fraction of the frame's shorter side,
    ``speed`` the share of the frame it crosses during the clip, ``offset`` its shift across the
    direction of motion (fraction of the frame, 0 = centred), ``phase`` where along its path it starts
    (0 = at the start edge when ``speed`` is 1)."""

    colour: str
    shape: str
    direction: str
    size: float = 1 / 6
    speed: float = 1.0
    offset: float = 0.0
    phase: float = 0.0

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"colour {self.colour!r}: one of {', '.join(COLOURS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape {self.shape!r}: one of {', '.join(SHAPES)}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction {self.direction!r}: one of {', '.join(DIRECTIONS)}")

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.direction)

    @property
    def attributes(self) -> dict[str, str]:
        return {"colour": self.colour, "shape": self.shape, "direction": self.direction}


def caption(colour: str, shape: str, direction: str) -> str:
    """The caption of a clip: names the colour, the shape and the direction of motion."""
    return CAPTION.format(colour=colour, shape=shape, direction=direction)


def parse_caption(text: str) -> dict[str, str] | None:
    """The attributes a caption (or prompt) of this world names, or None when it is not one."""
    words = text.lower()
    found = {}
    for key, names in (("colour", COLOURS), ("shape", SHAPES), ("direction", DIRECTIONS)):
        hits = [n for n in names if n in words]
        if len(hits) != 1:
            return None
        found[key] = hits[0]
    return found


def _shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        # the square of the same area as the circle, so size does not tell the shapes apart
        h = r * math.sqrt(math.pi) / 2
        return (np.abs(xx - cx) <= h) & (np.abs(yy - cy) <= h)
    # an upward-pointing isosceles triangle of the same area as the circle, centred on its box
    side = r * math.sqrt(2 * math.pi)
    top, bottom = cy - side / 2, cy + side / 2
    t = (yy - top) / side  # 0 at the apex, 1 at the base
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= t * side / 2)


def render(scene: Scene, num_frames: int, height: int, width: int) -> np.ndarray:
    """(F, H, W, 3) uint8 frames of ``scene``."""
    dx, dy = DIRECTIONS[scene.direction]
    r = max(2.0, scene.size * min(height, width))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    frames[:] = BACKGROUND
    along = width if dx else height
    across = height if dx else width
    travel = (along - 2 * r) * scene.speed
    start = r + (along - 2 * r - travel) * scene.phase
    centre_across = across / 2 + scene.offset * across
    for i in range(num_frames):
        p = i / max(1, num_frames - 1)
        pos = start + p * travel
        pos = pos if (dx > 0 or dy > 0) else along - pos
        cx, cy = (pos, centre_across) if dx else (centre_across, pos)
        frames[i][_shape_mask(scene.shape, xx, yy, cx, cy, r)] = COLOURS[scene.colour]
    return frames


@dataclass
class SceneSampler:
    """Random scenes of a domain, reproducible from ``seed``.

    Colour, shape and direction cycle through every combination (so any ``n`` covers them evenly);
    size, speed, offset and phase are drawn uniformly from the given ranges.
    """

    colours: tuple[str, ...] = PRETRAIN_COLOURS
    shapes: tuple[str, ...] = SHAPES
    directions: tuple[str, ...] = tuple(DIRECTIONS)
    size: tuple[float, float] = (0.13, 0.2)
    speed: tuple[float, float] = (0.7, 1.0)
    offset: tuple[float, float] = (-0.15, 0.15)
    seed: int = 0
    combos: list = field(init=False)

    def __post_init__(self) -> None:
        self.combos = list(product(self.colours, self.shapes, self.directions))

    def scenes(self, n: int) -> list[Scene]:
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(self.combos))
        out = []
        for i in range(n):
            colour, shape, direction = self.combos[order[i % len(self.combos)]]
            out.append(Scene(colour, shape, direction, size=float(rng.uniform(*self.size)),
                             speed=float(rng.uniform(*self.speed)), offset=float(rng.uniform(*self.offset)),
                             phase=float(rng.uniform(0, 1))))
        return out


def prompts(colours: tuple[str, ...], shapes: tuple[str, ...] = SHAPES,
            directions: tuple[str, ...] = tuple(DIRECTIONS)) -> list[str]:
    """Every caption of the given attribute values, in a fixed order (suites use these as prompts)."""
    return [caption(c, s, d) for c, s, d in product(colours, shapes, directions)]
