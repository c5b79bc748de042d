"""Data in and model out of a cluster training job, through the step's MLflow run.

The job's pods cannot see the step's local artifact paths, so the step
publishes the transformed data to its MLflow run (the tracking server proxies
artifacts to its store), every worker downloads it, the chief uploads the
whole model directory (nested folders included: the raw-input model in
``raw/`` is one), and the step downloads that into its model artifact.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

INPUT_PATH = "cluster/train-input"
OUTPUT_PATH = "cluster/trained-model"
# Not part of the model: a worker's pid file, and checkpoints (they stay on the pod).
_LOCAL_ONLY = shutil.ignore_patterns("*.pid", "checkpoints")


def publish_input(run_id: str, data_dir: Path) -> None:
    """Step side: make the transformed data reachable by the job's pods."""
    MlflowClient().log_artifacts(run_id, str(data_dir), INPUT_PATH)


def download_input(run_id: str, dst: Path) -> Path:
    """Worker side: the data published by :func:`publish_input`."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=INPUT_PATH,
                                                    dst_path=str(dst)))


def upload_output(run_id: str, model_dir: Path) -> None:
    """Chief side: hand every file of the trained model back, at any depth."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model"
        shutil.copytree(model_dir, staged, ignore=_LOCAL_ONLY)
        MlflowClient().log_artifacts(run_id, str(staged), OUTPUT_PATH)


def fetch_output(run_id: str, model_dir: Path) -> None:
    """Step side: the model the chief uploaded, into the step's model artifact."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        got = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=OUTPUT_PATH,
                                                       dst_path=tmp))
        shutil.copytree(got, model_dir, dirs_exist_ok=True)
