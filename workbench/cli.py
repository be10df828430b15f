"""The ``workbench`` command: dispatch to one module per command (workbench.commands).

``fit`` and ``validate`` go to LightningCLI as they are (``workbench fit --config recipes/R.yaml
--model.lora.rank 64``). Every other command parses its arguments with argparse.

A user's mistake (a ``UserError``: a missing path, a bad recipe value, a bad manifest) ends in one line,
``error: ...``, and exit status 2, without a traceback; ``WORKBENCH_DEBUG=1`` shows the traceback.

The console shows the workbench's stages, bars, data warnings and results; ``workbench -v COMMAND`` (or
``WORKBENCH_VERBOSE=1``) adds the libraries' own notes and progress bars (workbench.console).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from workbench.commands import COMMANDS
from workbench.commands.fit import LIGHTNING_COMMANDS, run_lightning
from workbench.common import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Fine-tune and evaluate CogVideoX. Training: `workbench fit --config recipes/NAME.yaml` "
        "(LightningCLI; `workbench fit --help` lists every option). `workbench -v COMMAND` also shows the "
        "libraries' own notes and progress bars.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show the libraries' own notes and progress bars (before the command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _, module in COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-v", "--verbose"):  # the libraries' own notes and bars too (workbench.console)
        argv.pop(0)
        os.environ["WORKBENCH_VERBOSE"] = "1"
        if from_command_line:
            sys.argv.pop(1)  # LightningCLI (and DDP's launcher) read sys.argv
    from workbench.console import quiet_libraries

    quiet_libraries()
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            return run_lightning(None if from_command_line else argv)
        parser = build_parser()
        ns = parser.parse_args(argv)
        if not hasattr(ns, "func"):
            parser.print_help()
            return 2
        return int(ns.func(ns) or 0)
    except UserError as e:
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2


def user_message(error: UserError) -> str:
    """The error's message on one line. An error raised in a DataLoader worker reaches the main process with
    the worker's traceback in its message; its last line is the original message."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith(type(error).__name__) else last
    return " ".join(line.strip() for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
