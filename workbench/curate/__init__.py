"""Curation: from raw footage to a training set (``workbench data split``), the stage before ``data check``."""
