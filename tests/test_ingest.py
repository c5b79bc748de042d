"""Ingest: real sources, stratified seeded splits, dataset tracking, clear errors."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from components.config import IngestConfig
from components.data.dataset import Split, read_frame, read_metadata
from components.errors import DataError
from components.ingest.core import run_ingest


def test_digits_split_is_stratified_and_recorded(digits_dir: Path) -> None:
    meta = read_metadata(digits_dir)
    assert meta.name == "digits" and meta.image_shape == [8, 8, 1]
    assert meta.classes == [str(i) for i in range(10)]
    assert sum(meta.rows.values()) == 1797
    frames = {s: read_frame(digits_dir, s) for s in Split}
    assert {s.value: len(f) for s, f in frames.items()} == meta.rows
    full = pd.concat(frames.values())["label"].value_counts(normalize=True)
    test = frames[Split.TEST]["label"].value_counts(normalize=True)
    assert np.allclose(full.sort_index(), test.sort_index(), atol=0.02)


def test_split_is_seeded(tmp_path: Path, store: str) -> None:
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        with mlflow.start_run():
            run_ingest(IngestConfig(seed=seed), tmp_path / name)
    ta, tb, tc = (read_frame(tmp_path / n, Split.TEST) for n in "abc")
    assert ta.equals(tb) and not ta.equals(tc)


def test_csv_source_logs_counts_and_inputs(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(90, 3)), columns=["a", "b", "c"])
    frame["species"] = np.repeat(["x", "y", "z"], 30)
    path = tmp_path / "iris-like.csv"
    frame.to_csv(path, index=False)
    meta = run_ingest(IngestConfig(source=str(path), label="species"), tmp_path / "out")
    assert meta.features == ["a", "b", "c"] and meta.classes == ["x", "y", "z"]
    run = mlflow.get_run(active_run.info.run_id)
    assert run.data.metrics["rows_train"] == meta.rows["train"]
    assert {i.tags[0].value for i in run.inputs.dataset_inputs} == {"train", "val", "test"}


def test_parquet_source(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    frame = pd.DataFrame({"f": np.arange(60, dtype=float), "y": [0, 1] * 30})
    frame.to_parquet(tmp_path / "d.parquet")
    meta = run_ingest(IngestConfig(source=str(tmp_path / "d.parquet"), label="y"), tmp_path / "o")
    assert meta.name == "d" and sum(meta.rows.values()) == 60


@pytest.mark.parametrize(
    ("content", "label", "message"),
    [
        (None, "y", "data file not found"),
        ("", "y", "file is empty"),
        ("a,b\n1,2\n3,4\n", "y", "label column 'y' not found; columns are: a, b"),
        ("a,y\n" + "1,k\n" * 10, "y", "single class 'k'"),
        ("a,y\n1,0\n2,1,5,6\n", "y", "line 3: expected 2 fields, got 4"),
        ("a,y\n" + "1,0\n2,1\n" * 5, "", "no label column given"),
    ],
    ids=["missing", "empty", "no-label", "one-class", "ragged", "label-unset"],
)
def test_bad_input_names_file_and_problem(tmp_path: Path, active_run: mlflow.ActiveRun,
                                          content: str | None, label: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as err:
        run_ingest(IngestConfig(source=str(path), label=label), tmp_path / "out")
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_transform_handles_gaps_and_strings(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    """Missing values and categoricals that ingest lets through are imputed and encoded."""
    from components.transform.core import run_transform

    path = tmp_path / "gaps.csv"
    path.write_text("a,b,y\n" + "1,red,0\n2,blue,1\n" * 5 + "nan,,1\n")
    run_ingest(IngestConfig(source=str(path), label="y", schema_source="none"), tmp_path / "d")
    fitted = run_transform(tmp_path / "d", tmp_path / "t", tmp_path / "p.json")
    columns = fitted.output_columns()
    assert columns[:2] == ["a", "b__oov"] and sorted(columns[2:]) == ["b=blue", "b=red"]
    assert not read_frame(tmp_path / "t", Split.TRAIN).isna().any().any()


def test_unknown_builtin_dataset(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    with pytest.raises(DataError, match="unknown built-in data set 'sklearn:nope'"):
        run_ingest(IngestConfig(source="sklearn:nope"), tmp_path)


def test_read_ahead_keeps_order_and_surfaces_errors() -> None:
    """The reader runs one batch ahead in a thread: same items, same order, its errors
    raised in the consumer, and an abandoned stream stops the reader."""
    import threading

    from components.ingest.beam_pipeline import read_ahead

    threads: set[str] = set()

    def numbers(n: int, fail_at: int | None = None):  # type: ignore[no-untyped-def]
        for i in range(n):
            threads.add(threading.current_thread().name)
            if i == fail_at:
                raise DataError(f"bad batch {i}")
            yield i

    assert list(read_ahead(numbers(50))) == list(range(50))
    assert threads and all(t.startswith("read-ahead") for t in threads)
    got: list[int] = []
    with pytest.raises(DataError, match="bad batch 3"):
        for item in read_ahead(numbers(10, fail_at=3)):
            got.append(item)
    assert got == [0, 1, 2]
    stream = read_ahead(numbers(10))
    assert next(stream) == 0
    stream.close()  # joins the reader thread; nothing left running
    assert not any(t.name.startswith("read-ahead") for t in threading.enumerate())
