"""``workbench fit`` / ``workbench validate``: LightningCLI on a recipe (workbench.train.cli).

``workbench fit --config recipes/R.yaml --model.lora.rank 64``; ``--help`` lists every option,
``--print_config`` shows the resolved recipe, ``--ckpt_path`` resumes (same MLflow run).
"""

from __future__ import annotations

import sys
from pathlib import Path


LIGHTNING_COMMANDS = ("fit", "validate")


def register(subparsers) -> None:
    for name in LIGHTNING_COMMANDS:
        subparsers.add_parser(name, help=f"LightningCLI {name} on a recipe (see `workbench {name} --help`)",
                              add_help=False)


def resolve_recipe_names(args: list[str]) -> None:
    """``--config NAME`` of a bundled recipe (``tiny-cpu``, ``shapes-lora-cpu``...) -> its path, in place, so
    recipes resolve by name from any folder; an unknown name is a UserError listing the bundled ones."""
    from workbench.train.recipes import recipe_path

    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            args[i + 1] = str(recipe_path(args[i + 1]))
        elif arg.startswith("--config="):
            args[i] = f"--config={recipe_path(arg.split('=', 1)[1])}"


def early_data_root(args: list[str]) -> str | None:
    """The run's ``data.root`` as LightningCLI will resolve it (the last ``--config``'s ``data.root``, then a
    ``--data.root`` override), read without importing Lightning; None where it cannot be told this simply
    (``--help``, ``--print_config``, a config that does not read as YAML: the full parse reports those)."""
    import yaml

    if any(a in ("-h", "--help") or a.startswith("--print_config") for a in args):
        return None
    root = None
    for i, arg in enumerate(args):
        name, inline, value = arg.partition("=")  # `--key value` and `--key=value` alike, as jsonargparse reads them
        value = value if inline else (args[i + 1] if i + 1 < len(args) else None)
        if name == "--config" and value is not None:
            try:
                data = yaml.safe_load(Path(value).read_text(encoding="utf-8")).get("data") or {}
                root = str(data["root"]) if isinstance(data, dict) and data.get("root") is not None else root
            except Exception:  # noqa: BLE001 - any unreadable config is the full parser's to report
                pass
        elif name == "--data.root" and value is not None:
            root = value
    return root


def run_lightning(argv: list[str] | None) -> int:
    """Hand the command line to LightningCLI (``argv=None``: it reads ``sys.argv`` itself, so DDP's launcher
    can re-execute the same command for the other processes; recipe names are resolved in it first)."""
    args = sys.argv if argv is None else argv
    resolve_recipe_names(args)
    root = early_data_root(args)
    if root is not None:  # a missing dataset answers in a second, not after importing Lightning and torch
        from workbench.data.manifest import find_manifest

        find_manifest(Path(root))
    from workbench.train.cli import lightning_cli
    from workbench.train.guards import NonFiniteError

    try:
        lightning_cli(argv)  # a recipe or flag it refuses: a RecipeError (a UserError: one line, exit 2)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
