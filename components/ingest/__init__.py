"""Ingest step: load a source, validate it, split it, record it."""
