"""``workbench fit`` / ``workbench validate``: LightningCLI on a recipe (workbench.train.cli).

``workbench fit --config recipes/R.yaml --model.lora_rank 64``; ``--help`` lists every option,
``--print_config`` shows the resolved recipe, ``--ckpt_path`` resumes (same MLflow run).
"""

from __future__ import annotations

import sys

LIGHTNING_COMMANDS = ("fit", "validate")


def register(subparsers) -> None:
    for name in LIGHTNING_COMMANDS:
        subparsers.add_parser(name, help=f"LightningCLI {name} on a recipe (see `workbench {name} --help`)",
                              add_help=False)


def run_lightning(argv: list[str] | None) -> int:
    """Hand the command line to LightningCLI (``argv=None``: it reads ``sys.argv`` itself, so DDP's launcher
    can re-execute the same command for the other processes)."""
    from workbench.train.cli import lightning_cli
    from workbench.train.guards import NonFiniteError

    try:
        lightning_cli(argv)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
