"""``workbench build-tiny OUT``: save a tiny random CogVideoX in diffusers layout (for tests and experiments)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("build-tiny", help="save a tiny random CogVideoX in diffusers layout",
                              description="Build a randomly initialised CogVideoX at toy widths (the architecture "
                              "of --family, changing from 2B only what that family's released configs change) and "
                              "save it in diffusers layout; its videos are noise.")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--family", default="cogvideox-2b", choices=("cogvideox-2b", "cogvideox-5b", "cogvideox1.5-5b",
                                                               "cogvideox-5b-i2v", "cogvideox1.5-5b-i2v"))
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from workbench.model.tiny import save_tiny_model

    print(save_tiny_model(ns.out, seed=ns.seed, family=ns.family))
    return 0
