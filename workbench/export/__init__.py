"""Export: a fine-tune as files stock diffusers loads, a model card, the MLflow registry and the hub.

``workbench.export.job.export`` is the whole job (``workbench export``).
"""
