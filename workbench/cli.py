"""The ``workbench`` command.

``fit`` and ``validate`` are LightningCLI (``workbench fit --config recipes/R.yaml --model.lora_rank 64``);
the other stages are subcommands of their own: ``quickstart``, ``data``, ``prepare``, ``eval``,
``export``, ``generate``, ``build-tiny``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

LIGHTNING_COMMANDS = ("fit", "validate")


def lightning_cli(args: list[str] | None = None, run: bool = True):
    """Run LightningCLI with the workbench module, data module and recipe logging.

    ``--ckpt_path`` resumes: the checkpoint must hold only tensors and plain data, and the run continues
    in its MLflow run (workbench.lit.reliability.ResumableCLI). A refused checkpoint or a run stopped by
    the non-finite guard ends the process with the error's message, without a traceback.
    """
    from workbench.lit.callbacks import LogRecipe
    from workbench.lit.datamodule import VideoDataModule
    from workbench.lit.module import CogVideoXModule
    from workbench.lit.reliability import CheckpointError, NonFiniteError, ResumableCLI

    # The frozen VAE and T5 are in eval mode on purpose; Lightning warns about any eval-mode module.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # Programmatic runs (quickstart) pass args while the process has its own command line. sys.argv
    # itself must stay: DDP's launcher re-executes it for the other processes.
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")
    try:
        return ResumableCLI(
            CogVideoXModule,
            VideoDataModule,
            save_config_callback=LogRecipe,
            args=args,
            run=run,
            auto_configure_optimizers=False,
            parser_kwargs={"default_env": False},
            # Checkpoints record the init args as the module saw them (absolute model and data paths),
            # not as typed, so a resume or export from another directory finds the same files.
            load_from_checkpoint_support=False,
        )
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_build_tiny(ns: argparse.Namespace) -> int:
    from workbench.model.tiny import save_tiny_model

    print(save_tiny_model(ns.out, seed=ns.seed))
    return 0


def cmd_data_sample(ns: argparse.Namespace) -> int:
    from workbench.data.sample import make_sample_dataset

    print(make_sample_dataset(ns.out, num_clips=ns.num_clips))
    return 0


def cmd_quickstart(ns: argparse.Namespace) -> int:
    from workbench.quickstart import quickstart

    quickstart(Path(ns.workdir), max_steps=ns.max_steps)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Fine-tune and evaluate CogVideoX. Training: `workbench fit --config recipes/NAME.yaml` "
        "(LightningCLI; `workbench fit --help` lists every option).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (see `workbench {name} --help`)", add_help=False)

    p = sub.add_parser("quickstart", help="tiny end-to-end fine-tune + eval + export on CPU")
    p.add_argument("--workdir", default="workbench-quickstart", help="where the tiny model, data and runs go")
    p.add_argument("--max-steps", type=int, default=None, help="override the tiny recipe's step count")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("build-tiny", help="save a tiny random CogVideoX in diffusers layout")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_build_tiny)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    p = data.add_parser("sample", help="write the bundled sample dataset (moving coloured shapes)")
    p.add_argument("out")
    p.add_argument("--num-clips", type=int, default=8)
    p.set_defaults(func=cmd_data_sample)

    from workbench.data.check import add_cli as add_data_check

    add_data_check(data)
    for module in ("workbench.prepare", "workbench.evaluate", "workbench.export", "workbench.generate",
                   "workbench.tracking_spool"):
        importlib.import_module(module).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        lightning_cli(None if from_command_line else argv)  # None: LightningCLI reads sys.argv itself
        return 0
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not hasattr(ns, "func"):
        parser.print_help()
        return 2
    return int(ns.func(ns) or 0)


if __name__ == "__main__":
    sys.exit(main())
