"""Train step: one framework, seeded, per-epoch metrics in MLflow."""
