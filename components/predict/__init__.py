"""The batch-scoring step (`twinflow predict`)."""
