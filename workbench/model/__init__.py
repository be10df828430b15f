"""Loading CogVideoX components, the tiny random builder, the training objective and adapters.

The package's own import is light: ``CogVideoXComponents`` and ``load_components`` (diffusers, torch) load when
first asked for, so a light submodule (``framing``, ``families``) imported by a process that needs no model (the
``data check`` decoder workers) does not pay for diffusers."""

__all__ = ["CogVideoXComponents", "load_components"]


def __getattr__(name: str):
    if name in __all__:
        from workbench.model import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'workbench.model' has no attribute {name!r}")
