"""The tune step: hyperparameter search with Optuna over the real trainer."""
