"""The registered version's MLflow model, used as MLflow users use it (issue 18).

Two real local pipeline runs, both frameworks each: a classifier on CSV rows with an
integer column, string columns and gaps, and a regression on a non-linear target
with a string column. The champion is then loaded with MLflow's own tools
(``mlflow.pyfunc.load_model``, ``mlflow models serve``) on raw rows as pandas reads
the CSV, and compared with ``twinflow serve``'s model class and with the trained
network behind the numpy transform.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException

from components.data.dataset import Split, read_arrays, read_frame, read_metadata
from components.export.manifest import FP32, ExportManifest
from components.export.pyfunc_model import PREDICTION_COLUMN, PROBABILITY_PREFIX
from components.frameworks import get_adapter
from components.serve.model import ExportsModel
from components.tags import (
    FRAMEWORK_TAG,
    MODEL_INPUT_TAG,
    NETWORK_MODEL_TAG,
    REGISTERED_MODEL_TAG,
    VERDICT_TAG,
)
from components.transform.fitted import FittedTransform
from tests.test_serve import Server
from tests.test_user_models import CliRun, _records

FRAMEWORKS = ("torch", "tensorflow")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_tracking_uri")]


@pytest.fixture(params=["shop", "house"])
def run_and_label(request: pytest.FixtureRequest) -> tuple[CliRun, str, str]:
    label = {"shop": "label", "house": "target"}[request.param]
    return request.getfixturevalue(request.param), request.param, label


def _raw_rows(run: CliRun, label: str) -> pd.DataFrame:
    """60 rows as read from the CSV: label dropped, an extra id column, columns shuffled,
    plus rows with unseen words and gaps everywhere."""
    rows = run.rows.head(60).drop(columns=[label])
    odd = rows.head(3).copy()
    for column in odd.columns:
        if odd[column].dtype == object:
            odd[column] = ["never-seen", None, "also-new"]
        elif odd[column].dtype == np.float64:
            odd[column] = np.nan
    rows = pd.concat([rows, odd], ignore_index=True)
    rows["id"] = np.arange(len(rows))
    return rows[list(reversed(rows.columns))]


def _pyfunc(run: CliRun, name: str) -> Any:
    mlflow.set_tracking_uri(run.db)
    return mlflow.pyfunc.load_model(f"models:/{name}@champion")


def _exports(run: CliRun, name: str) -> Path:
    version = run.client.get_model_version_by_alias(name, "champion")
    mlflow.set_tracking_uri(run.db)
    return Path(mlflow.artifacts.download_artifacts(
        run_id=version.run_id, artifact_path="exports",
        dst_path=str(run.root / f"dl-{name}-{version.version}")))


def _served(exports: Path, rows: pd.DataFrame) -> np.ndarray:
    """What `twinflow serve` answers: its KServe model class, V1 objects."""
    model = ExportsModel("m", exports)
    model.load()
    body = model.predict({"instances": _records(rows)})
    assert isinstance(body, dict)
    out = body["predictions"]
    return np.array([p["probabilities"] for p in out] if isinstance(out[0], dict) else out)


def _answers(frame: pd.DataFrame, classes: list[str]) -> np.ndarray:
    if classes:
        return frame[[f"{PROBABILITY_PREFIX}{c}" for c in classes]].to_numpy(np.float64)
    return frame[PREDICTION_COLUMN].to_numpy(np.float64)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_pyfunc_on_raw_rows_answers_like_serve_and_training(
        run_and_label: tuple[CliRun, str, str], fw: str) -> None:
    """Raw rows (int, float and string columns, gaps, unseen words, an extra column,
    any order) through MLflow's pyfunc: the same answers as `twinflow serve` (1e-5),
    close to the trained network behind the numpy transform (the same entry if fp32,
    else a compressed one: agreeing classes / R² against it), and right on the labels."""
    run, data, label = run_and_label
    name = f"{data}-{fw}"
    rows = _raw_rows(run, label)
    out = _pyfunc(run, name).predict(rows)
    exports = _exports(run, name)
    manifest = ExportManifest.load(exports)
    got = _answers(out, manifest.classes)
    np.testing.assert_allclose(got, _served(exports, rows), atol=1e-5)
    assert manifest.raw_features is not None
    fitted = FittedTransform.load(exports / manifest.raw_features.transform)
    adapter = get_adapter(fw)
    trained = adapter.predict(adapter.load_model(run.task_dirs("train")[fw]),
                              fitted.apply(rows), manifest.output)
    fp32 = manifest.entries[manifest.serving_default].variant == FP32
    truth = run.rows.head(60)[label].to_numpy()
    if manifest.classes:
        assert set(out[PREDICTION_COLUMN]) <= set(manifest.classes)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
        if fp32:
            np.testing.assert_allclose(got, trained, atol=1e-4)
        assert (got.argmax(1) == trained.argmax(1)).mean() >= 0.9
        assert (out[PREDICTION_COLUMN].head(60).to_numpy() == truth).mean() > 0.7
    else:
        if fp32:
            np.testing.assert_allclose(got, trained, rtol=1e-4, atol=1e-3)
        assert np.corrcoef(got, trained)[0, 1] > 0.99
        assert np.corrcoef(got[:60], truth)[0, 1] > 0.9  # label units, and right


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_signature_names_the_source_columns_and_the_example_is_real_rows(
        shop: CliRun, fw: str) -> None:
    model = _pyfunc(shop, f"shop-{fw}")
    inputs = {c.name: c.type.name for c in model.metadata.get_input_schema().inputs}
    assert inputs == {"size": "double", "weight": "double", "items": "long",
                      "colour": "string", "shape": "string"}
    outputs = [c.name for c in model.metadata.get_output_schema().inputs]
    assert outputs == [PREDICTION_COLUMN, f"{PROBABILITY_PREFIX}no", f"{PROBABILITY_PREFIX}yes"]
    version = shop.client.get_model_version_by_alias(f"shop-{fw}", "champion")
    assert version.tags[MODEL_INPUT_TAG] == "raw"
    example = model.input_example
    assert isinstance(example, pd.DataFrame) and len(example) == 5
    merged = example.merge(shop.rows, on=list(example.columns), how="left", indicator=True)
    assert (merged["_merge"] == "both").all(), "the input example is rows of the data set"


def test_bad_rows_are_refused_naming_the_column(shop: CliRun) -> None:
    model = _pyfunc(shop, "shop-torch")
    rows = shop.rows.head(5).drop(columns=["label"])
    with pytest.raises(MlflowException, match="weight"):
        model.predict(rows.drop(columns=["weight"]))
    with pytest.raises(MlflowException, match="size"):
        model.predict(rows.assign(size=["big"] * 5))


def test_pyfunc_loads_in_a_fresh_process_without_the_project(shop: CliRun,
                                                             tmp_path: Path) -> None:
    """Models from code: a new interpreter with an empty working directory and no
    twinflow on its path loads the champion and answers what this process does."""
    rows = _raw_rows(shop, "label")
    rows.to_parquet(tmp_path / "rows.parquet")
    script = ("import sys, mlflow, pandas as pd\n"
              "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
              "m.predict(pd.read_parquet('rows.parquet')).to_parquet('out.parquet')\n"
              "assert not [k for k in sys.modules if k.startswith(('components', 'pipelines'))]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TWINFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=shop.db, PYTHONPATH="")
    done = subprocess.run([sys.executable, "-c", script, "models:/shop-torch@champion"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(fresh, _pyfunc(shop, "shop-torch").predict(rows))


@pytest.mark.parametrize(("data", "fw"), [("shop", "torch"), ("shop", "tensorflow"),
                                          ("house", "torch")])
def test_mlflow_models_serve_answers_the_registered_model(
        request: pytest.FixtureRequest, data: str, fw: str) -> None:
    """`mlflow models serve -m models:/NAME@champion` on 127.0.0.1 answers raw rows
    (dataframe_records, JSON nulls for gaps) as the pyfunc does in process."""
    run: CliRun = request.getfixturevalue(data)
    label = "label" if data == "shop" else "target"
    name = f"{data}-{fw}"
    rows = _raw_rows(run, label)
    # mlflow runs `uvicorn` from PATH: the interpreter's own bin directory first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    server = Server([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                     f"models:/{name}@champion", "--env-manager", "local", "-h", "127.0.0.1"],
                    env={**os.environ, "MLFLOW_TRACKING_URI": run.db, "PATH": path},
                    ready_path="/ping")
    try:
        server.wait_ready()
        response = requests.post(f"{server.url}/invocations",
                                 json={"dataframe_records": _records(rows)}, timeout=60)
        assert response.status_code == 200, response.text
        served = pd.DataFrame(response.json()["predictions"])
    finally:
        server.stop()
    want = _pyfunc(run, name).predict(rows)
    assert list(served.columns) == list(want.columns)
    if data == "shop":
        assert (served[PREDICTION_COLUMN] == want[PREDICTION_COLUMN]).all()
    np.testing.assert_allclose(served.drop(columns=[PREDICTION_COLUMN] if data == "shop"
                                           else []).to_numpy(np.float64),
                               want.drop(columns=[PREDICTION_COLUMN] if data == "shop"
                                         else []).to_numpy(np.float64), atol=1e-6)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bare_network_is_logged_beside_it_with_the_framework_flavor(
        shop: CliRun, fw: str) -> None:
    """The version's network_model_uri tag: the framework object, which takes the
    transformed features and gives the trained network's outputs; torch's is a
    torch.export program (no pickle)."""
    version = shop.client.get_model_version_by_alias(f"shop-{fw}", "champion")
    uri = version.tags[NETWORK_MODEL_TAG]
    mlflow.set_tracking_uri(shop.db)
    [data] = [p.parent for p in (shop.root / ".twinflow" / "pipeline_root").glob(
        "*/transform/transformed/metadata.json")]
    x = read_arrays(data, Split.TEST, read_metadata(data)).x
    adapter = get_adapter(fw)
    want = adapter.forward(adapter.load_model(shop.task_dirs("train")[fw]), x)
    got = np.asarray(mlflow.pyfunc.load_model(uri).predict(x))
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-4)
    if fw == "torch":
        local = Path(mlflow.artifacts.download_artifacts(uri))
        assert list(local.rglob("model.pt2")) and not list(local.rglob("*.pth"))


def test_champion_is_rescored_on_raw_rows(shop: CliRun) -> None:
    """Evaluate against a raw-rows champion feeds it the raw test split (its own
    transform inside): re-scored on the same split, not taken from its tags."""
    from components.config import EvaluateConfig
    from components.evaluate.champion import SAME_SPLIT
    from components.evaluate.core import run_evaluate

    stage = shop.root / ".twinflow" / "pipeline_root"
    [data] = [p.parent for p in stage.glob("*/transform/transformed/metadata.json")]
    [raw] = [p.parent for p in stage.glob("*/ingest/dataset/metadata.json")]
    assert len(read_frame(raw, Split.TEST)) == read_metadata(data).rows["test"]
    mlflow.set_tracking_uri(shop.db)
    with mlflow.start_run():
        result = run_evaluate(EvaluateConfig(framework="torch", model_name="shop-torch"),
                              data, shop.task_dirs("train")["torch"], raw_dir=raw)
    verdict = result.verdict
    assert verdict.champion_source == SAME_SPLIT, verdict.reason
    assert result.accuracy is not None and verdict.champion_value is not None
    assert abs(verdict.champion_value - result.accuracy) < 0.05


def test_serve_without_model_serves_the_latest_registered_champion(house: CliRun) -> None:
    """`twinflow serve --framework torch` with no --model serves house-torch@champion,
    the model the latest pipeline run registered, answering like its pyfunc."""
    from tests.conftest import cli_env

    rows = _raw_rows(house, "target")
    server = Server([sys.executable, "-m", "pipelines.cli", "serve", "--framework", "torch"],
                    env=cli_env(house.root, house.db), name="house-torch")
    try:
        server.wait_ready()
        response = server.v1(_records(rows))
        assert response.status_code == 200, response.text
        got = np.asarray(response.json()["predictions"], dtype=np.float64)
    finally:
        server.stop()
    want = _pyfunc(house, "house-torch").predict(rows)[PREDICTION_COLUMN].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_serve_without_model_and_nothing_registered_is_one_clear_error(
        tmp_path: Path) -> None:
    from tests.conftest import cli_env

    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "serve"], cwd=tmp_path,
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "no pipeline run has registered a model" in done.stderr, done.stderr


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_model_card_is_on_the_version_with_the_runs_figures(shop: CliRun, fw: str) -> None:
    """The version's description is its model card; its figures are the run's: test
    metrics and verdict of evaluate, slices, the data set's digest and columns, the
    exports, training time and hardware. The push run holds it as Markdown and HTML."""
    name = f"shop-{fw}"
    version = shop.client.get_model_version_by_alias(name, "champion")
    card = version.description
    assert card.startswith(f"# {name} version {version.version}")
    [evaluate] = [r for r in shop.step_runs("evaluate") if r.data.tags[FRAMEWORK_TAG] == fw]
    for key in ("test_accuracy", "test_f1_macro", "test_roc_auc"):
        assert f"| {key} " in card and f"{evaluate.data.metrics[key]:.4g}" in card
    assert f"Verdict: {evaluate.data.tags[VERDICT_TAG]}" in card
    for shape in ("round", "square"):
        assert f"| {shape} " in card  # the slice table of --slice-feature shape
    stage = shop.root / ".twinflow" / "pipeline_root"
    [data] = [p.parent for p in stage.glob("*/transform/transformed/metadata.json")]
    meta = read_metadata(data)
    assert meta.digest in card and f"test {meta.rows['test']:,}" in card
    assert "| items " in card and "| long " in card  # the schema with source types
    manifest = ExportManifest.load(_exports(shop, name))
    assert f"served by default: `{manifest.serving_default}`" in card
    assert all(f"| {entry} " in card for entry in manifest.entries)
    [train] = [r for r in shop.step_runs("train") if r.data.tags[FRAMEWORK_TAG] == fw]
    assert f"{train.data.metrics['train_seconds']:.4g}" in card and "CPU(s)" in card
    [push] = [r for r in shop.step_runs("push") if r.data.tags[FRAMEWORK_TAG] == fw]
    assert push.data.tags[REGISTERED_MODEL_TAG] == name
    link = f"modelcard:runs:/{push.info.run_id}/model_card/model_card.md"
    assert link in "".join(shop.stdout.split()), "the run summary links the card"
    files = {a.path for a in shop.client.list_artifacts(push.info.run_id, "model_card")}
    assert files == {"model_card/model_card.md", "model_card/model_card.html"}
    mlflow.set_tracking_uri(shop.db)
    html = mlflow.artifacts.load_text(f"runs:/{push.info.run_id}/model_card/model_card.html")
    assert "<table" in html and meta.digest in html


@pytest.mark.parametrize("command", ["show", "compare"])
def test_show_and_compare_link_the_model_cards(shop: CliRun, command: str) -> None:
    """`twinflow show` (the latest pipeline run's summary) and `twinflow compare` (the
    latest both-frameworks run) link each registered version's model card."""
    from tests.conftest import cli_env

    done = subprocess.run([sys.executable, "-m", "pipelines.cli", command], cwd=shop.root,
                          env=cli_env(shop.root, shop.db), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    flat = "".join(done.stdout.split())
    for fw in FRAMEWORKS:
        [push] = [r for r in shop.step_runs("push") if r.data.tags[FRAMEWORK_TAG] == fw]
        if command == "show":
            assert f"shop-{fw}v" in flat
        assert f"modelcard:runs:/{push.info.run_id}/model_card/model_card.md" in flat
