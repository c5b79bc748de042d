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
    raw_train = read_frame(digits_dir, Split.TRAIN)[meta.features].to_numpy()
    raw_all = np.vstack([read_frame(digits_dir, s)[meta.features].to_numpy() for s in Split])
    assert np.allclose(params.mean, raw_train.mean(axis=0))
    assert not np.allclose(params.mean, raw_all.mean(axis=0))
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
    raw = read_frame(digits_dir, Split.VAL)[meta.features].to_numpy()
    out = read_frame(transformed[0], Split.VAL)[meta.features].to_numpy()
    assert np.allclose(params.apply(raw), out)
