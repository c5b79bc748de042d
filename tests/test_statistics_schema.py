"""Statistics (Beam CombineFn), schema inference, and validation of later data against it."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlflow.tracking import MlflowClient

from components.config import IngestConfig
from components.data.schema import SCHEMA_FILE, drift, load_schema
from components.data.statistics import QuantileSketch, StatsCombineFn, finish
from components.errors import DataError
from components.ingest.core import run_ingest


def test_statistics_match_numpy_and_merge() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=50_000)
    x[::100] = np.nan
    cats = rng.choice(["p", "q", "r"], size=50_000, p=[0.6, 0.3, 0.1]).astype(object)
    cats[::50] = None
    fn = StatsCombineFn()
    accs = []
    for part in np.array_split(np.arange(50_000), 4):  # four workers, then merged
        acc = fn.create_accumulator()
        for chunk in np.array_split(part, 3):
            batch = pa.RecordBatch.from_pydict({"x": pa.array(x[chunk], from_pandas=True),
                                                "c": pa.array(cats[chunk])})
            acc = fn.add_input(acc, batch)
        accs.append(acc)
    stats = finish(fn.extract_output(fn.merge_accumulators(accs)))
    ok = x[~np.isnan(x)]
    s = stats["x"]
    assert (s.count, s.missing) == (len(ok), 500)
    assert s.mean == pytest.approx(ok.mean()) and s.std == pytest.approx(ok.std())
    assert (s.min, s.max) == (ok.min(), ok.max())
    ranks = np.searchsorted(np.sort(ok), s.quantiles[1:-1]) / len(ok)
    assert np.abs(ranks - np.linspace(0, 1, 101)[1:-1]).max() < 0.02
    c = stats["c"]
    assert c.missing == 1000 and c.distinct == 3 and [v for v, _ in c.top] == ["p", "q", "r"]
    assert c.top[0][1] == int((cats == "p").sum())


def test_sketch_merges_to_exact_quantiles_on_small_data() -> None:
    a, b = QuantileSketch(), QuantileSketch()
    a.add(np.arange(0, 50, dtype=float))
    b.add(np.arange(50, 101, dtype=float))
    a.merge(b)
    assert a.quantiles(5) == [0.0, 25.0, 50.0, 75.0, 100.0]


def _csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def _data(n: int = 120, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(shift, 1.0, n).round(4),
                         "k": rng.choice(["u", "v", "w"], n),
                         "y": np.tile(["a", "b", "c"], n // 3)})


def _ingest_run(source: Path, out: Path, **kw: object) -> tuple[str, object]:
    with mlflow.start_run(nested=True) as run:
        meta = run_ingest(IngestConfig(source=str(source), label="y", **kw), out)
    return run.info.run_id, meta


def test_first_ingest_infers_and_logs_schema(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    frame = _data()
    frame.loc[3, "x"] = np.nan
    run_id, _ = _ingest_run(_csv(tmp_path / "first.csv", frame), tmp_path / "out",
                            schema_source="none")
    schema = load_schema(tmp_path / "out" / SCHEMA_FILE)
    assert schema.classes == ["a", "b", "c"] and schema.label == "y"
    assert schema.columns["x"].kind == "numeric" and not schema.columns["x"].required
    assert schema.columns["k"].domain == ["u", "v", "w"] and schema.columns["k"].required
    assert schema.columns["x"].min == frame["x"].min()
    stats = json.loads((tmp_path / "out" / "statistics.json").read_text())
    assert stats["all"]["x"]["missing"] == 1 and stats["train"]["y"]["count"] > 0
    artifacts = {a.path for d in ("statistics", "schema")
                 for a in MlflowClient().list_artifacts(run_id, d)}
    assert {"statistics/statistics.html", "statistics/statistics.json",
            "schema/schema.json"} <= artifacts
    assert "<table>" in (tmp_path / "out" / "statistics.html").read_text()


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns=["k"]), "column 'k': missing column"),
    (lambda f: f.assign(x=["s"] * len(f)),
     "column 'x': type changed: was numeric, now categorical"),
    (lambda f: f.assign(y=["a", "b", "zz"] * (len(f) // 3)), "column 'y': unseen label classes"),
    (lambda f: f.assign(k=[None, "u", "v", "w"] * (len(f) // 4)), "column 'k': missing-rate spike"),
    (lambda f: f.assign(x=f["x"] + 3.0), "column 'x': drift"),
    (lambda f: f.assign(k=["u"] * len(f)), "column 'k': drift"),
], ids=["missing-column", "type-change", "unseen-label", "missing-spike", "drift-numeric",
        "drift-categorical"])
def test_later_ingest_fails_on_severe_anomalies(tmp_path: Path, active_run: mlflow.ActiveRun,
                                                change: object, message: str) -> None:
    name = f"ref-{abs(hash(message)) % 10**8}"
    _ingest_run(_csv(tmp_path / f"{name}.csv", _data()), tmp_path / "ref")
    later = change(_data(seed=1))  # type: ignore[operator]
    (tmp_path / "new").mkdir()
    with pytest.raises(DataError) as err:  # same data set name: schema found in MLflow
        _ingest_run(_csv(tmp_path / "new" / f"{name}.csv", later), tmp_path / "out")
    assert message in str(err.value) and f"{name}.csv" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_later_ingest_warns_and_passes(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    """Extra columns, unseen categories and small range changes are warnings only."""
    _ingest_run(_csv(tmp_path / "warn.csv", _data(300)), tmp_path / "ref")
    later = _data(300, seed=1).assign(extra=1.0)
    later.loc[0, "k"] = "new"
    later.loc[1, "x"] = 100.0
    (tmp_path / "n").mkdir()
    _, meta = _ingest_run(_csv(tmp_path / "n" / "warn.csv", later), tmp_path / "out")
    assert "extra" not in meta.features  # type: ignore[attr-defined]
    found = {(a["column"], a["problem"], a["severity"]) for a in json.loads(
        (tmp_path / "out" / "anomalies.json").read_text())["anomalies"]}
    assert {("k", "unseen categories", "warning"), ("x", "out of range", "warning")} <= found


def test_explicit_schema_path_and_uri(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    run_id, _ = _ingest_run(_csv(tmp_path / "one.csv", _data()), tmp_path / "ref",
                            schema_source="none")
    bad = _csv(tmp_path / "two.csv", _data(seed=2).drop(columns=["x"]))
    for source in (str(tmp_path / "ref" / SCHEMA_FILE), f"runs:/{run_id}/schema/{SCHEMA_FILE}"):
        with pytest.raises(DataError, match="column 'x': missing column"):
            _ingest_run(bad, tmp_path / "out", schema_source=source)
    _ingest_run(bad, tmp_path / "fresh", schema_source="none")  # a new schema: accepted


def test_drift_distance_is_zero_for_same_data() -> None:
    from components.data.schema import ColumnSchema
    from components.data.statistics import FeatureStats

    q = list(np.linspace(0, 1, 101))
    col = ColumnSchema(kind="numeric", required=True, reference_quantiles=q)
    same = FeatureStats(kind="numeric", count=1, missing=0, missing_rate=0.0, quantiles=q)
    moved = same.model_copy(update={"quantiles": [v + 0.5 for v in q]})
    assert drift(col, same) == pytest.approx(0.0)
    assert drift(col, moved) > 0.3  # type: ignore[operator]
