"""End to end on tabular data with string categoricals and missing values:
`twinflow run --data FILE --label COL` through KFP's local runner, per framework,
then the raw-input model the train step exported answers raw CSV rows, and so does
`twinflow serve` of the registered champion over HTTP (the raw entry of its exports).

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

from components.tags import STEP_TAG
from tests.conftest import cli_env
from tests.test_transform_fit import mixed_frame

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_run_with_categoricals_and_gaps(tmp_path: Path, framework: str) -> None:
    from components.export.raw_runtime import load_raw_predictor
    from components.frameworks import get_adapter

    csv = tmp_path / "shop.csv"
    frame = mixed_frame(900, seed=5)
    frame.to_csv(csv, index=False)
    assert frame.isna().any().any() and frame.select_dtypes(include="object").shape[1] >= 2
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "-q", "--framework", framework,
         "--data", str(csv), "--label", "label", "--epochs", "15", "--min-accuracy", "0.6",
         "--model-name", f"shop-{framework}"],
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "blessed" in done.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("twinflow")
    assert exp is not None
    [transform] = client.search_runs([exp.experiment_id],
                                     filter_string=f"tags.`{STEP_TAG}` = 'transform'")
    assert transform.data.params["n_categorical"] == "2"
    assert transform.data.params["n_numeric"] == "2"

    [raw_dir] = {p.parent for p in tmp_path.rglob("raw/transform.json")  # the train step's
                 if not (p.parent.parent / "export.json").is_file()}  # not compress's copy
    raw_model = get_adapter(framework).raw_model(raw_dir.parent)
    assert raw_model is not None
    predict = load_raw_predictor(raw_model.format, raw_model.path)
    rows = pd.read_csv(csv)
    probs = predict(rows.drop(columns=["label"]))
    classes = np.array(sorted(rows["label"].unique()))
    accuracy = float((classes[probs.argmax(axis=1)] == rows["label"].to_numpy()).mean())
    assert accuracy > 0.75, accuracy
    _served_champion_answers_raw_rows(tmp_path, f"shop-{framework}", rows, classes)


def _served_champion_answers_raw_rows(tmp_path: Path, name: str, rows: pd.DataFrame,
                                      classes: np.ndarray) -> None:
    """`twinflow serve --model NAME` (champion) takes the CSV's rows as they are: it
    serves the exports' default raw-input entry (the chosen variant with the transform
    inside), which answers what the same file answers in process."""
    from components.export.manifest import ExportManifest
    from components.export.raw_runtime import load_raw_predictor
    from tests.test_serve import Server

    env = cli_env(tmp_path, f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    server = Server([sys.executable, "-m", "pipelines.cli", "serve", "--model", name],
                    env=env, name=name)
    try:
        server.wait_ready()
        head = rows.head(40)
        records = [{k: (None if isinstance(v, float) and np.isnan(v) else v)
                    for k, v in r.items()} for r in head.astype(object).to_dict("records")]
        response = server.v1(records)  # the label column rides along and is ignored
        assert response.status_code == 200, response.text
        got = np.array([p["probabilities"] for p in response.json()["predictions"]])
    finally:
        server.stop()
    [exports] = (tmp_path / ".twinflow" / "serving" / name).glob("v*/exports")
    manifest = ExportManifest.load(exports)
    entry = manifest.entries[manifest.serving_default]
    assert entry.input == "raw"
    predict = load_raw_predictor(entry.format, exports / entry.path)
    np.testing.assert_allclose(got, predict(head.drop(columns=["label"])), atol=1e-5)
    accuracy = float((classes[got.argmax(axis=1)] == head["label"].to_numpy()).mean())
    assert accuracy > 0.7, accuracy
