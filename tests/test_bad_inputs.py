"""Bad inputs whose failure must name the real cause (issue 17, finding 6).

A row too long for the reader's block, a folder without images, a label of
hundreds of tiny classes, duplicate and nested columns: each ends in one DataError
naming the file (and line or column) and what to do, before anything is trained.
Evaluate stays quick for a label of hundreds of classes. The step cores run for
real (Beam, MLflow); one slow test drives the CLI end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from components.config import EvaluateConfig, IngestConfig, TrainConfig
from components.data.csv_reader import ROW_LIMIT_OPTION
from components.errors import DataError
from components.evaluate.core import run_evaluate
from components.ingest.core import run_ingest
from components.train.core import run_train
from components.transform.core import run_transform
from tests.conftest import cli_env

BIG_FIELD = 3_000_000  # bytes: "a field of a few MB", well above the largest default block
SHORT_ROWS = 5000  # the long row comes after them, past the probe's first batch


def _ingest(source: Path, out: Path, **kw: object) -> None:
    kw.setdefault("schema_source", "none")
    with mlflow.start_run(nested=True):
        run_ingest(IngestConfig(source=str(source), **kw), out)  # type: ignore[arg-type]


def _fails(source: Path, tmp_path: Path, **kw: object) -> str:
    """The DataError message of ingesting ``source``; nothing may be left behind."""
    with pytest.raises(DataError) as err:
        _ingest(source, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists(), "nothing half-written"
    return str(err.value)


def _long_row_csv(path: Path) -> int:
    """Short rows, then one with a field of BIG_FIELD bytes; returns that row's line."""
    rows = "".join(f"{i},short,{i % 2}\n" for i in range(SHORT_ROWS))
    path.write_text("x,text,y\n" + rows + "7," + "z" * BIG_FIELD + ",1\n" + "1,a,0\n" * 5)
    return SHORT_ROWS + 2


def test_csv_row_longer_than_the_block_names_line_and_option(
        tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    path = tmp_path / "long.csv"
    line = _long_row_csv(path)
    message = _fails(path, tmp_path, label="y")
    assert message.startswith(f"{path}: line {line}: a row of {BIG_FIELD + 5:,} bytes")
    assert f"\"{ROW_LIMIT_OPTION}\": {1 << 22}" in message and "straddl" not in message


def test_jsonl_row_longer_than_the_block_names_line_and_option(
        tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    path = tmp_path / "long.jsonl"
    rows = [{"x": i, "text": "s", "y": i % 2} for i in range(30)]
    rows.insert(10, {"x": 1, "text": "z" * 100_000, "y": 1})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    message = _fails(path, tmp_path, label="y", batch_rows=16)  # a 16 KiB block
    assert message.startswith(f"{path}: line 11: a row of ") and ROW_LIMIT_OPTION in message


def test_max_row_bytes_raises_the_limit(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    path = tmp_path / "long.csv"
    _long_row_csv(path)
    _ingest(path, tmp_path / "out", label="y", csv={ROW_LIMIT_OPTION: 1 << 22})
    assert (tmp_path / "out" / "metadata.json").is_file()


def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(path)


@pytest.mark.parametrize(("layout", "expected"), [
    ({}, "folder holds no data files, and no images (looked for *.png, *.jpg, *.jpeg"),
    ({"cat/notes.txt": "x"}, "no images found (looked for *.png, *.jpg, *.jpeg; images go in "
                             "one sub-folder per class"),
    ({"a.png": None}, "found 1 images directly in it (e.g. a.png) but no class sub-folder"),
    ({"train/cat/1.png": None}, "train holds class sub-folders of images: pass that as --data"),
], ids=["empty", "class-folder-without-images", "loose-images", "one-level-too-deep"])
def test_folder_without_images_says_what_was_looked_for(
        tmp_path: Path, active_run: mlflow.ActiveRun, layout: dict[str, str | None],
        expected: str) -> None:
    root = tmp_path / "images"
    root.mkdir()
    for name, text in layout.items():
        if text is None:
            _png(root / name)
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
    message = _fails(root, tmp_path)
    assert message.startswith(f"{root}: ") and expected in message


def test_folder_of_text_files_without_label_mentions_images(
        tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello\n")
    message = _fails(tmp_path / "notes", tmp_path)
    assert "no label column given" in message and "no images found (looked for *.png" in message


def _many_classes(path: Path, n_classes: int, rows_each: int) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(n_classes * rows_each, 3)), columns=["a", "b", "c"])
    frame["y"] = np.repeat([f"k{i:03d}" for i in range(n_classes)], rows_each)
    frame.to_csv(path, index=False)


def test_too_many_classes_for_the_split_fails_at_ingest(
        tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    path = tmp_path / "many.csv"
    _many_classes(path, 300, 3)
    message = _fails(path, tmp_path, label="y")
    assert message.startswith(f"{path}: too many classes for the split: label column 'y' has "
                              "300 classes but the test split holds ")
    assert "300 classes have fewer than the 7 rows a stratified 70/15/15 split needs" in message
    assert "the smallest has 3" in message and "--test-fraction" in message


@pytest.mark.timeout(240)  # before: about 9 minutes (n² confusion-matrix numbers drawn)
def test_evaluate_of_hundreds_of_classes_is_bounded(
        tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    _many_classes(tmp_path / "many.csv", 300, 10)
    raw, data, model = tmp_path / "raw", tmp_path / "data", tmp_path / "model"
    _ingest(tmp_path / "many.csv", raw, label="y")
    with mlflow.start_run(nested=True):
        run_transform(raw, data, tmp_path / "transform.json")
    with mlflow.start_run(nested=True):
        run_train(TrainConfig(framework="torch", epochs=1, show_progress=False), data, model)
    with mlflow.start_run(nested=True) as run:
        result = run_evaluate(EvaluateConfig(framework="torch", model_name="many-classes"),
                              data, model, raw)
    assert len(result.classes) == 300
    logged = MlflowClient().get_run(run.info.run_id)
    assert logged.data.metrics["test_example_count"] == sum(map(sum, result.confusion))
    assert logged.data.metrics["test_accuracy_score"] == pytest.approx(result.accuracy)
    names = {f.path for f in MlflowClient().list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "roc_curve.png", "precision_recall_curve.png"} <= names


def test_curves_are_drawn_for_the_classes_with_most_rows() -> None:
    from components.evaluate.curves import MAX_CURVE_CLASSES, curve_figures

    y = np.repeat(np.arange(50), np.arange(1, 51))  # class i has i + 1 rows
    proba = np.random.default_rng(0).dirichlet(np.ones(50), size=len(y))
    figure = curve_figures(y, proba, [f"k{i}" for i in range(50)])["roc_curve.png"]
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert len(labels) == MAX_CURVE_CLASSES and labels[0].startswith("class k40")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_duplicate_columns_are_named(tmp_path: Path, active_run: mlflow.ActiveRun,
                                     fmt: str) -> None:
    path = tmp_path / f"dup.{fmt}"
    if fmt == "csv":
        path.write_text("a,b,a,y\n" + "1,2,3,0\n4,5,6,1\n" * 10)
    else:
        columns = [pa.array([1, 4] * 10), pa.array([2, 5] * 10), pa.array([3, 6] * 10),
                   pa.array([0, 1] * 10)]
        pq.write_table(pa.Table.from_arrays(columns, names=["a", "b", "a", "y"]), path)
    message = _fails(path, tmp_path, label="y")
    where = f"{path}: line 1" if fmt == "csv" else str(path)
    assert message == (f"{where}: column 'a' appears 2 times (columns 1, 3); give each column "
                       "its own name or drop the copy")


def test_nested_column_is_named(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    path = tmp_path / "nested.jsonl"
    path.write_text("".join(json.dumps({"x": i, "tags": [i, 1], "y": i % 2}) + "\n"
                            for i in range(30)))
    message = _fails(path, tmp_path, label="y")
    assert message.startswith(f"{path}: column 'tags' holds nested values (list<")
    assert "flatten it into one column per value, or drop it" in message


@pytest.mark.slow
def test_cli_names_too_many_classes_in_its_last_line(tmp_path: Path) -> None:
    _many_classes(tmp_path / "many.csv", 300, 3)
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--data", "many.csv", "--label", "y",
         "--epochs", "1", "-q"], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True,
        text=True, timeout=600)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 1
    assert lines[-1].startswith("twinflow: error: ingest: many.csv: too many classes for the "
                                "split: label column 'y' has 300 classes")
