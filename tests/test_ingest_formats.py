"""Beam ingest: every input format, the splits, the runner options, bad rows and bad files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from components.config import CsvOptions, IngestConfig
from components.data.dataset import DatasetMetadata, Split, read_frame, read_metadata
from components.errors import DataError
from components.ingest.beam_pipeline import pipeline_options
from components.ingest.core import run_ingest


def _frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": np.arange(n), "x": rng.normal(size=n).round(3),
        "colour": rng.choice(["red", "green", "blu;e \"x\""], size=n),
        "y": np.tile(["a", "b", "c"], n // 3)})


def _all_rows(out: Path) -> pd.DataFrame:
    return pd.concat([read_frame(out, s) for s in Split]).sort_values("id").reset_index(drop=True)


def _ingest(source: Path | str, out: Path, **kw: Any) -> tuple[DatasetMetadata, pd.DataFrame]:
    kw.setdefault("label", "y")
    kw.setdefault("schema_source", "none")
    with mlflow.start_run(nested=True):
        meta = run_ingest(IngestConfig(source=str(source), **kw), out)
    return meta, _all_rows(out)


def _write_tfrecord(frame: pd.DataFrame, path: Path) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in frame.itertuples(index=False):
            feats = {"id": tf.train.Feature(int64_list=tf.train.Int64List(value=[row.id])),
                     "x": tf.train.Feature(float_list=tf.train.FloatList(value=[row.x])),
                     "colour": tf.train.Feature(bytes_list=tf.train.BytesList(
                         value=[row.colour.encode()])),
                     "y": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.y.encode()]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feats))
                         .SerializeToString())


@pytest.mark.parametrize("fmt", ["csv-semicolon-latin1", "parquet", "jsonl", "tfrecord"])
def test_tabular_formats_round_trip(tmp_path: Path, active_run: mlflow.ActiveRun,
                                    fmt: str) -> None:
    frame = _frame()
    kw: dict[str, object] = {}
    if fmt.startswith("csv"):
        frame.loc[0, "colour"] = "rød"
        path = tmp_path / "t.csv"
        frame.to_csv(path, sep=";", index=False, encoding="latin-1")
        kw["csv"] = CsvOptions(delimiter=";", encoding="latin-1")
    elif fmt == "parquet":
        path = tmp_path / "t.parquet"
        frame.to_parquet(path)
    elif fmt == "jsonl":
        path = tmp_path / "t.jsonl"
        frame.to_json(path, orient="records", lines=True)
    else:
        path = tmp_path / "t.tfrecord"
        _write_tfrecord(frame, path)
    meta, rows = _ingest(path, tmp_path / "out", **kw)
    assert meta.classes == ["a", "b", "c"] and sum(meta.rows.values()) == 60
    assert set(meta.features) == {"id", "x", "colour"}
    assert rows["colour"].tolist() == frame["colour"].tolist()
    np.testing.assert_allclose(rows["x"], frame["x"], rtol=1e-6)
    assert rows["y"].tolist() == frame["y"].tolist()
    assert list((tmp_path / "out" / "train").glob("*.parquet")), "Parquet shards per split"


def test_folder_of_csv_files_and_headerless(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    frame = _frame(90)
    (tmp_path / "in").mkdir()
    for i in range(3):
        frame.iloc[i * 30:(i + 1) * 30].to_csv(tmp_path / "in" / f"p{i}.csv", index=False,
                                              header=False)
    meta = run_ingest(IngestConfig(source=str(tmp_path / "in"), label="f3", schema_source="none",
                                   csv=CsvOptions(header=False)), tmp_path / "out")
    ids = pd.concat([read_frame(tmp_path / "out", s) for s in Split])["f0"]
    assert sum(meta.rows.values()) == 90 and sorted(ids.tolist()) == list(range(90))


def test_image_folder(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "emu"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 255, size=(4, 5), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "img" / cls / f"{i}.{'png' if i else 'jpg'}")
    meta = run_ingest(IngestConfig(source=str(tmp_path / "img"), schema_source="none"),
                      tmp_path / "out")
    assert meta.image_shape == [4, 5, 1] and len(meta.features) == 20
    assert meta.classes == ["cat", "dog", "emu"] and sum(meta.rows.values()) == 18


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_mnist_idx(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, size=(30, 3, 3))
    labels = np.tile([0, 1, 2], 10)
    _idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    meta = run_ingest(IngestConfig(source=str(tmp_path / "train-images-idx3-ubyte.gz"),
                                   schema_source="none"), tmp_path / "out")
    assert meta.image_shape == [3, 3, 1] and meta.classes == ["0", "1", "2"]
    rows = pd.concat([read_frame(tmp_path / "out", s) for s in Split])
    got = {(*r[:-1].astype(int), r[-1]) for r in rows.to_numpy()}
    assert got == {(*i.ravel(), str(lab)) for i, lab in zip(images, labels, strict=True)}


def test_bad_idx_header(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") * 3 + b"\x00" * 10)
    with pytest.raises(DataError, match="IDX header says \\[5, 5, 5\\]"):
        run_ingest(IngestConfig(source=str(path), schema_source="none"), tmp_path / "out")


def test_stratified_random_split_is_exact_per_class(tmp_path: Path,
                                                    active_run: mlflow.ActiveRun) -> None:
    frame = _frame(300)
    frame.to_parquet(tmp_path / "s.parquet")
    _ingest(tmp_path / "s.parquet", tmp_path / "a", val_fraction=0.2, test_fraction=0.1)
    counts = pd.concat({s.value: read_frame(tmp_path / "a", s)["y"].value_counts()
                        for s in Split}, axis=1)
    assert (abs(counts["train"] - 70) <= 1).all() and (abs(counts["val"] - 20) <= 1).all()
    _ingest(tmp_path / "s.parquet", tmp_path / "b", val_fraction=0.2, test_fraction=0.1, seed=5)
    assert set(read_frame(tmp_path / "a", Split.TEST)["id"]) != set(
        read_frame(tmp_path / "b", Split.TEST)["id"])


def test_hash_split_is_stable_as_data_grows(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    big = _frame(240).sample(frac=1.0, random_state=3)
    big.iloc[:120].to_parquet(tmp_path / "small.parquet")
    big.to_parquet(tmp_path / "big.parquet")
    where: dict[str, dict[int, str]] = {}
    for name in ("small", "big"):
        _ingest(tmp_path / f"{name}.parquet", tmp_path / name, split_method="hash",
                key_column="id")
        where[name] = {int(i): s.value for s in Split
                       for i in read_frame(tmp_path / name, s)["id"]}
    assert all(where["big"][i] == split for i, split in where["small"].items())
    assert set(where["big"].values()) == {"train", "val", "test"}


def test_hash_split_needs_key_column() -> None:
    with pytest.raises(ValueError, match="needs key_column"):
        IngestConfig(split_method="hash")


@pytest.mark.parametrize(("runner", "options", "view", "attr", "value"), [
    ("FlinkRunner", {"flink_master": "flink:8081", "parallelism": 4},
     "FlinkRunnerOptions", "flink_master", "flink:8081"),
    ("SparkRunner", {"spark_master_url": "spark://m:7077"},
     "SparkRunnerOptions", "spark_master_url", "spark://m:7077"),
    ("DataflowRunner", {"project": "p1", "region": "europe-west1", "temp_location": "gs://b/t"},
     "GoogleCloudOptions", "temp_location", "gs://b/t"),
    ("PortableRunner", {"job_endpoint": "localhost:8099", "environment_type": "LOOPBACK"},
     "PortableOptions", "environment_type", "LOOPBACK"),
])
def test_runner_options_are_passed_through(runner: str, options: dict[str, object], view: str,
                                           attr: str, value: str) -> None:
    from apache_beam.options import pipeline_options as po

    config = IngestConfig(runner=runner, pipeline_options=options)
    built = pipeline_options(config.runner, config.pipeline_options)
    assert built.view_as(po.StandardOptions).runner == runner
    assert getattr(built.view_as(getattr(po, view)), attr) == value
    if "parallelism" in options:
        assert built.view_as(po.FlinkRunnerOptions).parallelism == 4


def test_skip_bad_rows_counts_and_samples(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    path = tmp_path / "skip.csv"
    path.write_text("x,y\n" + "1,a\n2,b\n" * 10 + "3,a,9\n" + "4,\n" + "5,b\n6,a\n" * 5)
    meta = run_ingest(IngestConfig(source=str(path), label="y", schema_source="none",
                                   bad_rows="skip"), tmp_path / "out")
    assert sum(meta.rows.values()) == 30
    report = json.loads((tmp_path / "out" / "anomalies.json").read_text())["bad_rows"]
    assert report["count"] == 2
    assert {(r["line"], r["reason"]) for r in report["sample"]} == {
        ("22", "expected 2 fields, got 3"), ("23", "label column 'y' is missing")}
    assert mlflow.get_run(active_run.info.run_id).data.metrics["bad_rows"] == 2


@pytest.mark.parametrize(("content", "kw", "message"), [
    (b"x,y\n1,a\n2,b\n3,a,7\n", {}, "line 4: expected 2 fields, got 3"),
    (b"x,y\n" + b"1,a\n2,b\n" * 3000 + b"oops,a\n", {"batch_rows": 16},
     "line 6002: column 'x': wrong type: value 'oops' is not a number"),
    (b"x,y\n1,a\n2,b\n3,\xe9\n", {}, "line 4: not valid utf-8 text (column 'y')"),
    ("x,y\n1,a\n2,b\n".encode("utf-16"), {}, "UTF-16/32 byte-order mark"),
    (b"", {}, "file is empty"),
    (b"x,y\n", {}, "no data rows"),
    (b"x,z,y\n" + b"1,,a\n2,,b\n" * 6, {}, "column 'z': all values missing"),
    (b"x,y\n1,a\n2,\n", {}, "line 3: label column 'y' is missing"),
], ids=["ragged", "wrong-type", "non-utf8", "utf16-bom", "empty", "header-only", "all-missing",
        "missing-label"])
def test_bad_files_name_file_and_line(tmp_path: Path, active_run: mlflow.ActiveRun,
                                      content: bytes, kw: dict[str, object], message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        _ingest(path, tmp_path / "out", **kw)
    assert message in str(err.value) and str(path) in str(err.value)
    assert not (tmp_path / "out").exists(), "nothing half-written"


def test_utf8_bom_is_skipped(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfx,y\n" + b"1,a\n2,b\n" * 6)
    meta = run_ingest(IngestConfig(source=str(path), label="y", schema_source="none"),
                      tmp_path / "out")
    assert meta.features == ["x"] and read_metadata(tmp_path / "out").label == "y"
