"""Loading CogVideoX components, the tiny random builder, the training objective and adapters."""

from workbench.model.loading import CogVideoXComponents, load_components

__all__ = ["CogVideoXComponents", "load_components"]
