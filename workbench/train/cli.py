"""The recipe-driven training entry point: LightningCLI with the workbench module, data and run setup.

``workbench fit --config recipes/R.yaml --model.lora.rank 64`` is ``lightning_cli(["fit", ...])``. Given
``--ckpt_path FILE`` the checkpoint is checked to hold only tensors and plain data before anything is
built, and the run continues in the MLflow run recorded in it (``ResumableCLI``).
"""

from __future__ import annotations

import re
import sys
import warnings
from argparse import ArgumentError
from contextlib import contextmanager

from lightning.pytorch.cli import LightningCLI

from workbench.common import UserError, first_line
from workbench.model.checkpoint import MLFLOW_CHECKPOINT_KEY, load_checkpoint_safely

LOGGER_CLASS_PATH = "workbench.tracking.logger.DurableMLflowLogger"


class ResumableCLI(LightningCLI):
    """LightningCLI that, given ``--ckpt_path FILE``, refuses a checkpoint that is not plain tensors and data
    (before building anything) and continues the MLflow run recorded in it: the workbench MLflow logger gets
    ``resume_run_id`` and ``resume_step`` unless the command line names a ``run_id``."""

    def add_arguments_to_parser(self, parser) -> None:
        # The data follows the model's family (its native clip, its clip rules): the model is given once.
        parser.link_arguments("model.model", "data.model")
        parser.link_arguments("model.family", "data.family")

    def _set_seed(self) -> None:
        with refused_values(self.config, "seed_everything"):  # seed_everything: -1
            super()._set_seed()

    def instantiate_classes(self) -> None:
        with refused_values(self.config):  # a value the model, data module, trainer or a callback refuses
            super().instantiate_classes()
        # The family is read once, where `fit` starts: the data module reads it from the model (its clip rules
        # come first) and the module takes that object, not the model's name again.
        family = getattr(getattr(self, "datamodule", None), "family", None)
        if family is not None and hasattr(self.model, "family"):
            self.model.family = family

    def parse_arguments(self, parser, args) -> None:
        try:
            super().parse_arguments(parser, args)
        except (RecursionError, UnicodeDecodeError) as e:  # jsonargparse reads the file as UTF-8 YAML
            where = _last_config(sys.argv[1:] if args is None else list(args))
            why = ("is not UTF-8 text; re-save it as UTF-8" if isinstance(e, UnicodeDecodeError) else
                   "is nested too deeply to be a recipe; a recipe is a mapping of model, data and trainer settings")
            raise RecipeError(f"{where or 'the recipe'}: {why} (recipes/*.yaml)") from None
        subcommand = self.config.get("subcommand")
        node = self.config[subcommand] if subcommand else self.config
        for group in ("trainer", "model", "data"):  # jsonargparse lets `trainer: [1, 2]` through to Lightning
            value = node.get(group)
            if not hasattr(value, "items") and (value is not None or group == "trainer"):  # `trainer: null` too
                where = _last_config(sys.argv[1:] if args is None else list(args))
                raise RecipeError(f"{f'{where}: ' if where else ''}{group} must be a mapping of settings "
                                  f"({group}: {{key: value, ...}}), got {type(value).__name__} {str(value)[:40]!r}")
        if subcommand is None:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry") or "://" in str(ckpt_path):
            return
        checkpoint = load_checkpoint_safely(ckpt_path)
        run = checkpoint.get(MLFLOW_CHECKPOINT_KEY) or {}
        if subcommand != "fit" or not run.get("run_id"):
            return
        loggers = self.config[subcommand].trainer.get("logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            if str(getattr(logger, "class_path", "") or "") != LOGGER_CLASS_PATH:
                continue
            init_args = logger.init_args
            if init_args.get("run_id") is None and init_args.get("resume_run_id") is None:
                init_args.resume_run_id = run["run_id"]
                init_args.resume_step = int(checkpoint.get("global_step", 0))


def lightning_cli(args: list[str] | None = None, run: bool = True) -> ResumableCLI:
    """Run LightningCLI with the workbench module, data module and run setup.

    ``args=None`` reads ``sys.argv`` (what `workbench fit` does, so DDP's launcher can re-execute the same
    command line for the other processes); programmatic runs pass the arguments.
    """
    from workbench.train.datamodule import VideoDataModule
    from workbench.train.module import CogVideoXModule
    from workbench.train.run_setup import RunSetup

    # The frozen VAE and T5 are in eval mode on purpose; Lightning warns about any eval-mode module.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # Programmatic runs (quickstart) pass args while the process has its own command line. sys.argv
    # itself must stay: DDP's launcher re-executes it for the other processes.
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")
    try:
        return ResumableCLI(
            CogVideoXModule,
            VideoDataModule,
            save_config_callback=RunSetup,
            args=args,
            run=run,
            auto_configure_optimizers=False,
            # A recipe or flag error raises a RecipeError (one line) instead of printing usage and exiting.
            parser_kwargs={"default_env": False, "exit_on_error": False},
            # Checkpoints record the init args as the module saw them (absolute model and data paths),
            # not as typed, so a resume or export from another directory finds the same files.
            load_from_checkpoint_support=False,
        )
    except ArgumentError as e:
        where = _last_config(sys.argv[1:] if args is None else args)
        raise RecipeError(f"{f'{where}: ' if where else ''}{parse_error_summary(e)} (`workbench fit --help` lists "
                          "every option)") from None


def _last_config(args: list[str]) -> str | None:
    """The last ``--config`` of a command line (the recipe the values come from), or None."""
    configs = [value for i, a in enumerate(args) for value in
               ([args[i + 1]] if a == "--config" and i + 1 < len(args) else
                [a.split("=", 1)[1]] if a.startswith("--config=") else [])]
    return configs[-1] if configs else None


@contextmanager
def refused_values(config, key: str | None = None):
    """A value that passes the parser's type checks but that the class it configures refuses when it is built
    (``data.val_split: -1``, ``trainer.max_steps: -5``, ``trainer.devices: 0``, an accelerator that is not
    installed) becomes a RecipeError naming the recipe, instead of the constructor's traceback.

    The constructors' own messages name the value (ValueError and its kin, Lightning's
    MisconfigurationException); ``key`` names the setting when only one is read. ``WORKBENCH_DEBUG=1`` shows the
    traceback."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        yield
    except UserError:
        raise
    except (ValueError, ImportError, MisconfigurationException) as e:
        sub = config.get("subcommand") if hasattr(config, "get") else None
        configs = (config.get(sub) if sub else config).get("config") if hasattr(config, "get") else None
        where = f"{configs[-1]}: " if configs else ""
        what = f"{key}: " if key else ""
        raise RecipeError(f"{where}{what}{parse_error_summary(e)} (fix the recipe value or its command-line "
                          "override; `workbench fit --help` lists every option)") from e


def read_recipe(path: str, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """A recipe parsed and checked exactly as ``workbench fit --config PATH OVERRIDES`` would parse it
    (unknown keys, wrong types and class paths are errors), without building anything.

    ``path`` may be a bundled recipe's name. Returns the resolved config as a plain dict
    (``{"model": {...}, "data": {...}, "trainer": {...}, ...}``).
    """
    from workbench.train.datamodule import VideoDataModule
    from workbench.train.module import CogVideoXModule
    from workbench.train.recipes import recipe_path

    class ParseOnly(ResumableCLI):
        def instantiate_classes(self) -> None:  # parse and validate; build nothing
            pass

        def _set_seed(self) -> None:  # reading a recipe must not reseed the caller's RNGs
            pass

    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")
    recipe = recipe_path(path)
    try:
        cli = ParseOnly(CogVideoXModule, VideoDataModule, args=["--config", str(recipe), *overrides],
                        run=False, auto_configure_optimizers=False, save_config_callback=None,
                        parser_kwargs={"default_env": False, "exit_on_error": False},
                        load_from_checkpoint_support=False)
    except ArgumentError as e:
        raise RecipeError(f"{recipe}: {parse_error_summary(e)} (`workbench fit --help` lists every key)") from None
    return cli.config.as_dict()


# The lines of a jsonargparse error that say what is wrong, below a header such as 'Parser key "trainer.callbacks":'
_SPECIFIC = re.compile(r"is not accepted|does not accept|Expected a (?!<class 'NoneType'>)|Got value|not a valid|"
                       r"No module|Import path|does not exist|Problem with given class_path")


def parse_error_summary(error: BaseException) -> str:
    """One line of a jsonargparse error: its header, plus the lines naming the bad key, value or class path.

    jsonargparse puts the key's path on the first line and the cause further down (for a typo inside a
    callback's ``init_args``: 'Option 'num_frame' is not accepted', ten lines below); the user needs both.
    """
    lines = [line.strip(" -") for line in str(error).splitlines() if line.strip(" -")]
    if not lines:
        return first_line(error)
    head = lines[0]
    if not head.endswith(":"):
        return head[:300]
    details = list(dict.fromkeys(line.rstrip(":") for line in lines[1:] if _SPECIFIC.search(line)))
    return f"{head} {'; '.join(details) or (lines[1] if len(lines) > 1 else '')}"[:400]


class RecipeError(UserError):
    """A recipe (or override) that `workbench fit` would refuse: an unknown key, a wrong type or class path."""
