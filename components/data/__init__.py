"""Data I/O shared by the steps: sources, split files and dataset metadata."""
