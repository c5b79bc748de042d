"""Transform: statistics from the train split only, applied to every split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.data.dataset import Split, read_frame, read_metadata
from components.transform.core import load_params


def test_fitted_on_train_only(digits_dir: Path, transformed: tuple[Path, Path]) -> None:
    data_dir, params_path = transformed
    meta = read_metadata(digits_dir)
    params = load_params(params_path)
    assert [f.name for f in params.numeric] == meta.features and not params.categorical
    mean = np.array([f.shift for f in params.numeric])
    raw_train = read_frame(digits_dir, Split.TRAIN)[meta.features].to_numpy()
    raw_all = np.vstack([read_frame(digits_dir, s)[meta.features].to_numpy() for s in Split])
    assert np.allclose(mean, raw_train.mean(axis=0))
    assert not np.allclose(mean, raw_all.mean(axis=0))
    assert read_metadata(data_dir).features == meta.features  # one column per pixel
    out_train = read_frame(data_dir, Split.TRAIN)[meta.features].to_numpy()
    varying = raw_train.std(axis=0) > 0
    assert np.allclose(out_train.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(out_train[:, varying].std(axis=0), 1, atol=1e-3)


def test_labels_encoded_as_class_indices(digits_dir: Path, transformed: tuple[Path, Path]) -> None:
    raw = read_frame(digits_dir, Split.TEST)["label"]
    out = read_frame(transformed[0], Split.TEST)["label"]
    classes = read_metadata(digits_dir).classes
    assert [classes[i] for i in out] == raw.tolist()


def test_params_apply_reproduces_transformed_rows(digits_dir: Path,
                                                  transformed: tuple[Path, Path]) -> None:
    meta = read_metadata(digits_dir)
    params = load_params(transformed[1])
    raw = read_frame(digits_dir, Split.VAL)
    out = read_frame(transformed[0], Split.VAL)[meta.features].to_numpy()
    assert np.allclose(params.apply(raw), out)


def test_trained_model_dir_holds_raw_input_model(trained: tuple[object, Path],
                                                 digits_dir: Path) -> None:
    """Image data (numeric only) too: the raw-input model reproduces the network."""
    from components.export.raw_runtime import load_raw_predictor
    from components.frameworks import get_adapter

    fw, model_dir = trained
    adapter = get_adapter(str(fw))
    raw_model = adapter.raw_model(model_dir)
    assert raw_model is not None
    raw = read_frame(digits_dir, Split.TEST).head(50)
    served = load_raw_predictor(raw_model.format, raw_model.path)(raw)
    params = load_params(model_dir / "raw" / "transform.json")
    expected = adapter.predict(adapter.load_model(model_dir), params.apply(raw))
    assert np.allclose(served, expected, atol=1e-5)
