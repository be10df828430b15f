"""What the console shows: the workbench's stages, its own progress bars, the warnings about the user's data
(once each), and the result. The libraries' own notes (diffusers' and transformers' loading bars and
"should be kept in float32" notes, Lightning's device lines, tips and deprecation notes, MLflow's database
setup lines, and PyTorch/Lightning/diffusers deprecation warnings) are hidden unless the command runs with
``workbench -v ...`` or ``WORKBENCH_VERBOSE=1``.

Nothing is filtered by what a warning says about the user's data: the filters name the libraries' loggers and
the modules their warnings come from, so a warning the workbench raises (``rank_zero_warn`` from a workbench
module: a truncated caption, a skipped sample) always shows, once.
"""

from __future__ import annotations

import logging
import os
import warnings

# the libraries whose own notes go behind -v: their loggers, and the modules their Python warnings come from
LIBRARY_LOGGERS = ("diffusers", "transformers", "mlflow", "alembic", "torch", "jsonargparse", "peft", "accelerate",
                   "httpx", "urllib3", "huggingface_hub")
LIBRARY_MODULES = r"(lightning|lightning_fabric|pytorch_lightning|torch|diffusers|transformers|mlflow|peft|" \
                  r"jsonargparse|accelerate|huggingface_hub|torchmetrics|sqlalchemy|alembic|pydantic)(\.|$)"

_configured: bool | None = None


def verbose() -> bool:
    return os.environ.get("WORKBENCH_VERBOSE", "") not in ("", "0")


def quiet_libraries() -> bool:
    """Hide the libraries' notes (unless verbose); returns whether they are hidden. Safe to call repeatedly;
    ``WORKBENCH_VERBOSE`` is read from the environment, so DDP's child processes follow their parent."""
    global _configured
    if _configured is not None:
        return _configured
    _configured = hide = not verbose()
    if not hide:
        return False
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Read when those libraries are imported (not here: a command that fails on a missing path must answer
    # before torch is imported); their own loading bars are switched off right after their import.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    after_import("diffusers.utils.logging", lambda m: (m.set_verbosity_error(), m.disable_progress_bar()))
    after_import("transformers.utils.logging", lambda m: (m.set_verbosity_error(), m.disable_progress_bar()))
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning, UserWarning, RuntimeWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARY_MODULES)
    # Lightning prints its device lines, "💡 Tip"s and "`Trainer.fit` stopped" through rank_zero_info on its own
    # handlers, the same function the workbench's stage lines use: keep the records whose caller is workbench code.
    # The filter sits on the loggers rank_zero_info writes to (created here if Lightning is not imported yet; a
    # logger's own filters see the records made at it), so it holds whenever Lightning is imported.
    for package in ("lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logger = logging.getLogger(f"{package}.utilities.rank_zero")
        if _only_workbench not in logger.filters:
            logger.addFilter(_only_workbench)
    for name in ("lightning.fabric.utilities.seed", "lightning_fabric.utilities.seed"):  # "Seed set to 0"
        logging.getLogger(name).setLevel(logging.WARNING)
    # The workbench's own warnings: once per message, however many times a loop raises them, on one line.
    warnings.filterwarnings("once", module=r"workbench(\.|$)")
    warnings.formatwarning = _one_line
    return True


_library_format = warnings.formatwarning


def _one_line(message, category, filename, lineno, line=None) -> str:
    """``warning: MESSAGE`` for the workbench's warnings (they speak to the user, not of a source line)."""
    if os.path.abspath(filename).startswith(_PACKAGE_DIR):
        return f"warning: {message}\n"
    return _library_format(message, category, filename, lineno, line)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def after_import(name: str, hook) -> None:
    """Run ``hook(module)`` once ``name`` is imported: now if it already is, else right after its import (a
    finder on ``sys.meta_path`` that wraps that one module's loader). The download bars of huggingface_hub are
    not touched: a download is a long stage of the user's."""
    import sys

    if name in sys.modules:
        hook(sys.modules[name])
        return
    sys.meta_path.insert(0, _AfterImport(name, hook))


class _AfterImport:
    def __init__(self, name: str, hook):
        self.name, self.hook = name, hook

    def find_spec(self, fullname, path=None, target=None):
        import sys

        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once
        from importlib.util import find_spec

        spec = find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader_exec, hook = spec.loader.exec_module, self.hook

        def exec_module(module):
            loader_exec(module)
            hook(module)

        spec.loader.exec_module = exec_module
        return spec


def _only_workbench(record: logging.LogRecord) -> bool:
    """A library record passes when the workbench logged it (rank_zero_info from a workbench module), or it is
    an error."""
    return record.levelno >= logging.ERROR or os.path.abspath(record.pathname).startswith(_PACKAGE_DIR)
