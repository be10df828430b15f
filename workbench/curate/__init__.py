"""Curation: turning raw footage into a training set (captioning, splitting)."""
