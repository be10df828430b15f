"""Training: the LightningModule, the DataModule, callbacks, guards and the recipe-driven CLI.

Recipes name the classes by their modules (``workbench.train.module.CogVideoXModule``, ...); this
package imports nothing itself so ``workbench --help`` stays fast.
"""
