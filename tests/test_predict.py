"""`twinflow predict`: batch scoring with a registered model, as a real local KFP run.

The model is the ``shop`` session run's champion (tests/registered_runs.py). Each
test runs the CLI in a subprocess against that run's MLflow store.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from components.export.pyfunc_model import PREDICTION_COLUMN, PROBABILITY_PREFIX
from components.predict.core import ANOMALIES_FILE, ROW_COLUMN
from components.tags import STEP_TAG, Step
from tests.conftest import cli_env
from tests.test_user_models import CliRun

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_tracking_uri")]


def _predict(run: CliRun, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "predict", *args],
                          cwd=workdir, env=cli_env(workdir, run.db), capture_output=True,
                          text=True, timeout=900)


def _latest_predict_run(run: CliRun) -> mlflow.entities.Run:
    exp = run.client.get_experiment_by_name("twinflow")
    assert exp is not None
    [found] = run.client.search_runs([exp.experiment_id],
                                     filter_string=f"tags.`{STEP_TAG}` = '{Step.PREDICT}'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
    return found


def _pyfunc_answers(run: CliRun, rows: pd.DataFrame) -> pd.DataFrame:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(run.db)
    try:
        model = mlflow.pyfunc.load_model("models:/shop-torch@champion")
        return model.unwrap_python_model().predict(None, rows)
    finally:
        mlflow.set_tracking_uri(previous)


def test_predict_scores_a_file_of_many_batches_like_the_registered_model(
        shop: CliRun, tmp_path: Path) -> None:
    """3,000 CSV rows in batches of 256 (the last one partial): every row answered, in
    order, beside the kept columns, equal to the registered model's answers; the
    predict run records the rows and its (empty) anomaly list."""
    rows = pd.concat([shop.rows.drop(columns=["label"])] * 5, ignore_index=True)
    rows.to_csv(tmp_path / "new.csv", index=False)
    done = _predict(shop, tmp_path, "--model", "shop-torch", "--data", "new.csv", "-o",
                    "out/scored.parquet", "--keep", "size", "--keep", "colour",
                    "--batch-rows", "256")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"wrote {len(rows):,} predictions" in done.stdout
    scored = pd.read_parquet(tmp_path / "out" / "scored.parquet")
    assert list(scored.columns[:2]) == ["size", "colour"] and len(scored) == len(rows)
    # The registered model on all rows in one call: its export answers a row the same
    # whatever the batch (no dynamically quantized entry), so batches change nothing.
    want = _pyfunc_answers(shop, pd.read_csv(tmp_path / "new.csv"))
    assert (scored[PREDICTION_COLUMN].to_numpy() == want[PREDICTION_COLUMN].to_numpy()).all()
    probs = [f"{PROBABILITY_PREFIX}no", f"{PROBABILITY_PREFIX}yes"]
    np.testing.assert_allclose(scored[probs].to_numpy(), want[probs].to_numpy(), atol=1e-5)
    np.testing.assert_array_equal(scored["size"].to_numpy(), rows["size"].to_numpy())
    found = _latest_predict_run(shop)
    assert found.info.status == "FINISHED" and found.data.metrics["rows"] == len(rows)
    assert found.data.metrics["anomalies_error"] == 0
    mlflow.set_tracking_uri(shop.db)
    assert mlflow.artifacts.load_text(f"runs:/{found.info.run_id}/{ANOMALIES_FILE}")


def test_predict_reads_parquet_and_numbers_the_rows(shop: CliRun, tmp_path: Path) -> None:
    """Another ingest format; without --keep the output carries the row number."""
    rows = shop.rows.drop(columns=["label"]).head(100)
    rows.to_parquet(tmp_path / "new.parquet", index=False)
    done = _predict(shop, tmp_path, "--model", "shop-torch", "--data", "new.parquet")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    scored = pd.read_parquet(tmp_path / "predictions.parquet")
    assert scored[ROW_COLUMN].tolist() == list(range(100))


def test_unseen_categories_are_a_warning_counted_in_the_run(shop: CliRun,
                                                             tmp_path: Path) -> None:
    rows = shop.rows.drop(columns=["label"]).head(400).copy()
    rows.loc[:3, "colour"] = "ultraviolet"  # 1% of the rows: no drift, just new words
    rows.to_csv(tmp_path / "new.csv", index=False)
    done = _predict(shop, tmp_path, "--model", "shop-torch", "--data", "new.csv")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "predictions.parquet").is_file()
    found = _latest_predict_run(shop)
    assert found.data.metrics["anomalies_warning"] >= 1
    assert "unseen categories" in done.stdout + done.stderr


@pytest.mark.parametrize(("change", "message"), [
    ("drop", "missing column"),
    ("words", "type changed"),
    ("drift", "drift"),
])
def test_bad_data_is_one_clear_error_and_no_output(shop: CliRun, tmp_path: Path,
                                                    change: str, message: str) -> None:
    """A missing column, numbers turned to words, or rows far from the training
    distribution: exit 1, one error line naming the column, no output file (and no
    temporary one left beside it), the predict run FAILED."""
    rows = shop.rows.drop(columns=["label"]).head(300).copy()
    if change == "drop":
        rows = rows.drop(columns=["weight"])
    elif change == "words":
        rows["weight"] = "heavy"
    else:
        rows["weight"] = rows["weight"] + 1_000.0
    rows.to_csv(tmp_path / "new.csv", index=False)
    done = _predict(shop, tmp_path, "--model", "shop-torch", "--data", "new.csv", "-o",
                    "out/p.parquet")
    assert done.returncode == 1, done.stdout[-3000:]
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("twinflow: error:")]
    assert "weight" in line and message in line, line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert _latest_predict_run(shop).info.status == "FAILED"
