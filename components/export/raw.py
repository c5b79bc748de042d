"""Raw-input exports: the fitted transform inside the model, raw rows in.

The train step writes the network with the transform in front of it (each
framework package's ``raw_layer``) into ``model/raw/``; the framework adapter
says where and in which format (:class:`RawModel`). Compress
ships it in the exports directory as the ``raw`` entry (TorchScript or
SavedModel, with its ``transform.json``), adds ``raw_<entry>`` for every ONNX
entry (the transform as ONNX operators in front: components.export.onnx_raw)
and every TFLite entry the builder can convert anew with the transform inside
(the TensorFlow package's tflite_raw), including the chosen compressed variant, checks
them in a fresh process on probe rows, and the model server serves one by
default (see ``ExportManifest.raw_entry``): clients send the columns the
training data had, with strings and gaps, and no transform code runs outside
the model (no train/serve skew).

Probe rows are drawn from the fitted transform itself (values around each
fitted range, bucket edges, every vocabulary word, unseen words, missing
values), so the check covers imputation and out-of-vocabulary paths that a
clean test split may never hit.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.export.candidates import RawExporter, RawModel
from components.export.manifest import ExportEntry, ExportFormat, RawFeatures, path_bytes
from components.transform.fitted import FITTED_FILE, FittedTransform

RAW_DIR = "raw"
RAW_ENTRY = "raw"
UNSEEN = "<unseen>"


@dataclass(frozen=True)
class RawExports:
    """The raw-input entries of an exports directory and where each came from."""

    entries: dict[str, ExportEntry]
    features: RawFeatures
    sources: dict[str, str]  # raw entry -> the transformed-input entry inside it ("" = model)


def _ship_framework_model(raw_model: RawModel | None,
                          out_dir: Path) -> tuple[ExportEntry, FittedTransform] | None:
    """Copy the train step's raw-input model into ``out_dir/raw``; None if it has none."""
    if raw_model is None or not raw_model.path.exists():
        return None
    shutil.copytree(raw_model.path.parent, out_dir / RAW_DIR, dirs_exist_ok=True)
    rel = Path(RAW_DIR) / raw_model.path.name
    entry = ExportEntry(format=raw_model.format, path=rel.as_posix(),
                        bytes=path_bytes(out_dir / rel), input="raw")
    return entry, FittedTransform.load(out_dir / RAW_DIR / FITTED_FILE)


def raw_exports(raw_model: RawModel | None, out_dir: Path, entries: dict[str, ExportEntry],
                exporters: Mapping[str, RawExporter] | None = None) -> RawExports | None:
    """The train step's raw-input model (None or missing: no raw entries), plus
    ``raw_<entry>`` for each entry of ``entries`` (fp32 and a compressed variant) that
    is ONNX (the transform merged in front) or has an exporter (a format whose file
    cannot be extended, e.g. TFLite: converted anew)."""
    shipped = _ship_framework_model(raw_model, out_dir)
    if shipped is None:
        return None
    from components.export.onnx_raw import with_transform

    entry, fitted = shipped
    features = RawFeatures(numeric=[f.name for f in fitted.numeric],
                           categorical=[c.name for c in fitted.categorical],
                           transform=(Path(RAW_DIR) / FITTED_FILE).as_posix())
    raw = {RAW_ENTRY: entry}
    sources = {RAW_ENTRY: ""}
    exporters = exporters or {}
    for name, source in entries.items():
        if source.input != "transformed":
            continue
        rel = Path(RAW_DIR) / f"{name}_raw{Path(source.path).suffix}"
        if source.format == ExportFormat.ONNX:
            with_transform(out_dir / source.path, fitted, out_dir / rel)
        elif name in exporters:
            exporters[name](fitted, out_dir / rel)
        else:
            continue
        raw[f"raw_{name}"] = ExportEntry(format=source.format, path=rel.as_posix(),
                                         variant=source.variant, bytes=path_bytes(out_dir / rel),
                                         input="raw")
        sources[f"raw_{name}"] = name
    return RawExports(raw, features, sources)


def probe_rows(fitted: FittedTransform, rows: int = 64, seed: int = 0) -> pd.DataFrame:
    """Raw rows that exercise every path of the transform (see the module docstring)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for f in fitted.numeric:
        if f.boundaries:
            lo, hi = min(f.boundaries), max(f.boundaries)
            pad = (hi - lo) / 4 or 1.0
            values = rng.uniform(lo - pad, hi + pad, rows)
            edges = f.boundaries[:rows]
            values[rng.choice(rows, len(edges), replace=False)] = edges  # on the edge itself
        else:
            values = f.shift + f.scale * rng.normal(size=rows)
        values[rng.random(rows) < 0.1] = np.nan
        columns[f.name] = values
    for c in fitted.categorical:
        words = np.array([*c.vocabulary, UNSEEN, ""], dtype=object)
        columns[c.name] = words[rng.integers(0, len(words), rows)]
    return pd.DataFrame(columns, index=range(rows))

