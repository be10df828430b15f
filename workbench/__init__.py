"""Fine-tuning and evaluation workbench for CogVideoX."""

__version__ = "0.1.0"
