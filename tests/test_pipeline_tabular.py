"""End to end on tabular data with string categoricals and missing values:
`twinflow run --data FILE --label COL` through KFP's local runner, per framework,
then the raw-input model the train step exported answers raw CSV rows.

Marked slow: each run is a real pipeline with real training.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import cli_env
from tests.test_transform_fit import mixed_frame

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_run_with_categoricals_and_gaps(tmp_path: Path, framework: str) -> None:
    from components.transform.serving import layer_module

    csv = tmp_path / "shop.csv"
    frame = mixed_frame(900, seed=5)
    frame.to_csv(csv, index=False)
    assert frame.isna().any().any() and frame.select_dtypes(include="object").shape[1] >= 2
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "-q", "--framework", framework,
         "--data", str(csv), "--label", "label", "--epochs", "15", "--min-accuracy", "0.6"],
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "blessed" in done.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("twinflow")
    assert exp is not None
    [transform] = client.search_runs([exp.experiment_id],
                                     filter_string="tags.`twinflow.step` = 'transform'")
    assert transform.data.params["n_categorical"] == "2"
    assert transform.data.params["n_numeric"] == "2"

    layer = layer_module(framework)
    [raw_dir] = {p.parent for p in tmp_path.rglob("raw/transform.json")}
    predict = layer.load_raw_model(layer.raw_model_path(raw_dir.parent))
    rows = pd.read_csv(csv)
    probs = predict(rows.drop(columns=["label"]))
    classes = np.array(sorted(rows["label"].unique()))
    accuracy = float((classes[probs.argmax(axis=1)] == rows["label"].to_numpy()).mean())
    assert accuracy > 0.75, accuracy
