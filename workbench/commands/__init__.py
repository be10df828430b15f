"""The ``workbench`` commands, one module each: ``register(subparsers)`` adds its parser, ``run(ns)`` does it.

A command module parses and prints; the work is done by the stage it calls (workbench.train, .eval,
.export, .data, .model). Heavy libraries are imported inside ``run`` so ``workbench --help`` is fast.
"""

# (name on the command line, module) in the order ``workbench --help`` lists them
COMMANDS = (
    ("quickstart", "workbench.commands.quickstart"),
    ("data", "workbench.commands.data"),
    ("prepare", "workbench.commands.prepare"),
    ("fit", "workbench.commands.fit"),
    ("eval", "workbench.commands.evaluate"),
    ("review", "workbench.commands.review"),
    ("export", "workbench.commands.export"),
    ("generate", "workbench.commands.generate"),
    ("tracking", "workbench.commands.tracking"),
    ("build-tiny", "workbench.commands.build_tiny"),
    ("shapes", "workbench.commands.shapes"),
)
