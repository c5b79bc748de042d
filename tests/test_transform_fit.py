"""Transform analyzers (fitted in Beam on train only) on mixed tabular data.

String categoricals and missing values: imputation, standardise, min-max,
quantile buckets, vocabularies with an out-of-vocabulary bucket, per-feature
choices from the step config.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from components.config import IngestConfig
from components.data.dataset import Split, read_frame, read_metadata
from components.errors import ConfigError
from components.ingest.core import run_ingest
from components.transform.core import fitted_for, run_transform
from components.transform.fitted import FittedTransform, TransformConfig


def mixed_frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Numeric and string features with gaps; the label depends on both kinds."""
    rng = np.random.default_rng(seed)
    size = rng.normal(10.0, 3.0, n).round(3)
    weight = rng.uniform(0.0, 50.0, n).round(2)
    colour = rng.choice(["red", "green", "blue", "violet"], n, p=[0.4, 0.3, 0.2, 0.1])
    shape = rng.choice(["round", "square"], n)
    label = np.where((size > 10) ^ (colour == "red"), "yes", "no")
    frame = pd.DataFrame({"size": size, "weight": weight, "colour": colour.astype(object),
                          "shape": shape.astype(object), "label": label})
    frame.loc[rng.random(n) < 0.1, "size"] = np.nan
    frame.loc[rng.random(n) < 0.1, "colour"] = None
    return frame


def ingest_mixed(tmp_path: Path, frame: pd.DataFrame | None = None) -> Path:
    csv = tmp_path / "mixed.csv"
    (frame if frame is not None else mixed_frame()).to_csv(csv, index=False)
    out = tmp_path / "raw"
    with mlflow.start_run(nested=True):
        run_ingest(IngestConfig(source=str(csv), label="label", schema_source="none"), out)
    return out


def test_defaults_fit_on_train_only(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    raw = ingest_mixed(tmp_path)
    fitted = run_transform(raw, tmp_path / "t", tmp_path / "p.json")
    train = read_frame(raw, Split.TRAIN)
    everything = pd.concat([read_frame(raw, s) for s in Split])
    size = next(f for f in fitted.numeric if f.name == "size")
    assert (size.mode, size.impute) == ("standard", "mean")
    assert size.fill == pytest.approx(train["size"].mean())
    assert size.shift == pytest.approx(train["size"].mean())
    assert size.scale == pytest.approx(train["size"].std(ddof=0))
    assert size.shift != pytest.approx(everything["size"].mean())
    colour = next(c for c in fitted.categorical if c.name == "colour")
    assert colour.encoding == "onehot"
    assert colour.vocabulary == train["colour"].value_counts().index.tolist()
    assert colour.fill == colour.vocabulary[0]  # most frequent
    out = read_frame(tmp_path / "t", Split.TRAIN)
    assert read_metadata(tmp_path / "t").features == fitted.output_columns()
    assert not out[fitted.output_columns()].isna().any().any()
    assert out["size"].mean() == pytest.approx(0.0, abs=0.05)  # imputed with the mean
    assert set(out["colour=red"]) == {0.0, 1.0}
    assert fitted_for(tmp_path / "t") == FittedTransform.load(tmp_path / "p.json") == fitted


def test_per_feature_choices(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    raw = ingest_mixed(tmp_path)
    config = TransformConfig.model_validate({"features": {
        "size": {"impute": "median", "scale": "bucketize", "buckets": 4},
        "weight": {"scale": "minmax"},
        "colour": {"encoding": "index", "impute": "constant", "fill_value": ""}}})
    fitted = run_transform(raw, tmp_path / "t", tmp_path / "p.json", config)
    train = read_frame(raw, Split.TRAIN)
    size = next(f for f in fitted.numeric if f.name == "size")
    assert len(size.boundaries) == 3
    assert np.allclose(size.boundaries, train["size"].quantile([0.25, 0.5, 0.75]), atol=0.3)
    weight = next(f for f in fitted.numeric if f.name == "weight")
    assert (weight.shift, weight.scale) == pytest.approx(
        (train["weight"].min(), train["weight"].max() - train["weight"].min()))
    out = read_frame(tmp_path / "t", Split.TRAIN)
    assert out["weight"].min() == pytest.approx(0.0) and out["weight"].max() == pytest.approx(1.0)
    buckets = out[[f"size__bucket{i}" for i in range(4)]].to_numpy()
    assert (buckets.sum(axis=1) == 1).all() and (buckets.mean(axis=0) > 0.15).all()
    colour = out["colour"].to_numpy()
    assert set(colour) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert (colour[train["colour"].isna().to_numpy()] == 0).all()  # '' -> OOV bucket


def test_unseen_category_goes_to_oov_bucket() -> None:
    fitted = FittedTransform.model_validate({
        "label": "y", "classes": ["a", "b"], "fitted_on_rows": 3,
        "numeric": [{"name": "x", "impute": "mean", "fill": 2.0, "mode": "standard",
                     "shift": 1.0, "scale": 2.0}],
        "categorical": [{"name": "c", "impute": "most_frequent", "fill": "p",
                         "encoding": "onehot", "vocabulary": ["p", "q"]}]})
    rows = pd.DataFrame({"x": [3.0, None], "c": ["zzz", None]})
    assert fitted.output_columns() == ["x", "c__oov", "c=p", "c=q"]
    assert fitted.apply(rows).tolist() == [[1.0, 1.0, 0.0, 0.0], [0.5, 0.0, 1.0, 0.0]]


def test_bad_options_name_the_feature(tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    raw = ingest_mixed(tmp_path)
    config = TransformConfig.model_validate({"features": {"colour": {"scale": "minmax"}}})
    with pytest.raises(ConfigError, match="feature 'colour' is string but its options"):
        run_transform(raw, tmp_path / "t", tmp_path / "p.json", config)


def test_shared_option_names_apply_to_either_kind() -> None:
    config = TransformConfig.model_validate({"features": {"colour": {"impute": "constant"},
                                                          "size": {"impute": "constant"}}})
    assert config.categorical_for("colour").impute == "constant"
    assert config.numeric_for("size").impute == "constant"
    assert config.numeric_for("other") == config.numeric
