"""Curation: from raw footage to a training set (``workbench data split``: shots into clips with quality scores;
``workbench data caption``: captions from a vision-language model), the stage before ``data check``."""
