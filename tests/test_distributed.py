"""Multi-process training on this machine: DDP over gloo (through torch's elastic
launcher) and MultiWorkerMirroredStrategy on loopback, both real processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from components.config import Framework, TrainConfig
from components.frameworks import get_adapter
from components.train.core import TrainResult, run_train
from components.train.launch import TrainingError

FRAMEWORKS = pytest.mark.parametrize("fw", [Framework.TORCH, Framework.TENSORFLOW],
                                     ids=["torch", "tensorflow"])


def _weights(fw: Framework, model_dir: Path) -> np.ndarray:
    model = get_adapter(fw).load_model(model_dir)
    if fw is Framework.TORCH:
        return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    return np.concatenate([w.ravel() for w in model.get_weights()])


def _train(fw: Framework, data: Path, out: Path, **options: object) -> TrainResult:
    config = TrainConfig(framework=fw, show_progress=False, **options)  # type: ignore[arg-type]
    with mlflow.start_run():
        return run_train(config, data, out, out.parent / f"{out.name}-ckpt")


@FRAMEWORKS
def test_two_workers_match_one_worker(fw: Framework, transformed: tuple[Path, Path],
                                      tmp_path: Path) -> None:
    one = _train(fw, transformed[0], tmp_path / "one", epochs=2, workers=1)
    two = _train(fw, transformed[0], tmp_path / "two", epochs=2, workers=2)
    a, b = _weights(fw, tmp_path / "one"), _weights(fw, tmp_path / "two")
    assert np.abs(a - b).max() < 1e-5 * max(1.0, np.abs(a).max())
    assert two.last_epoch.loss == pytest.approx(one.last_epoch.loss, rel=1e-4)
    assert (tmp_path / "two" / "worker-1.pid").is_file(), "a second process really trained"


@pytest.mark.slow
@FRAMEWORKS
def test_killed_worker_fails_fast_and_rerun_resumes(fw: Framework, store: str,
                                                    transformed: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    outcome: dict[str, BaseException] = {}

    def target() -> None:
        try:
            _train(fw, transformed[0], model_dir, epochs=500, workers=2)
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    client = MlflowClient()
    deadline = time.monotonic() + 240
    run_id = None
    while time.monotonic() < deadline and run_id is None:  # wait for two finished epochs
        runs = mlflow.search_runs(output_format="list",
                                  filter_string="attributes.status = 'RUNNING'")
        for run in runs:
            if len(client.get_metric_history(run.info.run_id, "loss")) >= 2:
                run_id = run.info.run_id
        time.sleep(0.5)
    assert run_id is not None, "training never reached epoch 2"
    os.kill(int((model_dir / "worker-1.pid").read_text()), signal.SIGKILL)
    killed_at = time.monotonic()
    thread.join(timeout=180)
    assert not thread.is_alive(), "training hung after a worker died"
    assert time.monotonic() - killed_at < 120
    error = outcome.get("error")
    assert isinstance(error, TrainingError)
    assert "--resume" in str(error)
    done = len(client.get_metric_history(run_id, "loss"))

    resumed = _train(fw, transformed[0], model_dir, epochs=done + 2, workers=2, resume=True)
    assert resumed.last_epoch.epoch == done + 2
    assert resumed.samples_per_second > 0
    history = client.get_metric_history(mlflow.last_active_run().info.run_id, "loss")
    assert min(m.step for m in history) >= done + 1 > 1, "started after the checkpoint"


@pytest.mark.parametrize(("fw", "precision"), [(Framework.TORCH, "bf16"),
                                               (Framework.TORCH, "fp16"),
                                               (Framework.TENSORFLOW, "bf16")])
def test_mixed_precision_trains_on_cpu(fw: Framework, precision: str,
                                       transformed: tuple[Path, Path], tmp_path: Path) -> None:
    result = _train(fw, transformed[0], tmp_path / "m", epochs=3, precision=precision)
    assert result.last_epoch.val_score > 0.85
    fp32 = _weights(fw, tmp_path / "m")
    assert fp32.dtype == np.float32, "saved weights stay fp32 (master weights)"


def test_auto_workers_without_gpus_is_one_process(transformed: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    _train(Framework.TORCH, transformed[0], tmp_path / "m", epochs=1, workers=0)
    params = mlflow.get_run(mlflow.last_active_run().info.run_id).data.params
    assert params["workers_used"] == "1"
    assert not (tmp_path / "m" / "worker-1.pid").exists()
