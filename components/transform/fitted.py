"""The fitted transform: per-feature choices (config) and fitted values (artifact).

The artifact is plain JSON (a pydantic model) so that three implementations
can apply it identically: NumPy here (to write the transformed splits the
networks train on), a TorchScript module (components.frameworks.torch.raw_layer)
and Keras preprocessing layers (components.frameworks.tensorflow.raw_layer) in front of
the exported models, which then take raw rows.

Output column order is fixed and shared by all three: first the scaled
numeric columns (standard / min-max / none, one column each, in input order),
then the bucketised numeric columns (one-hot over ``len(boundaries) + 1``
buckets each), then the categorical columns (one-hot over ``1 + len(vocab)``,
index 0 being the out-of-vocabulary bucket, or that index as one column).
Grouping by kind lets every implementation work on whole blocks at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.errors import ConfigError, DataError
from components.export.pyfunc_model import raw_arrays
from components.tasks import TaskName, get_task

FITTED_FILE = "transform.json"
Scale = Literal["standard", "minmax", "bucketize", "none"]
NumericImpute = Literal["mean", "median", "constant"]
CategoricalImpute = Literal["most_frequent", "constant"]
Encoding = Literal["onehot", "index"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_C = TypeVar("_C", bound=_Config)


class NumericChoice(_Config):
    """How a numeric feature is imputed and scaled."""

    impute: NumericImpute = "mean"
    fill_value: float = Field(default=0.0, description="Used when impute is 'constant'.")
    scale: Scale = "standard"
    buckets: int = Field(default=10, ge=2, le=1000, description="Quantile buckets (bucketize).")


class CategoricalChoice(_Config):
    """How a string feature is imputed and encoded."""

    impute: CategoricalImpute = "most_frequent"
    fill_value: str = Field(default="", description="Used when impute is 'constant'; "
                                                    "'' maps missing values to the OOV bucket.")
    encoding: Encoding = "onehot"
    max_vocab: int = Field(default=1000, ge=1, le=100_000)
    min_frequency: int = Field(default=1, ge=1)


class TransformConfig(_Config):
    """The transform step's config: defaults per kind, overrides per feature."""

    numeric: NumericChoice = Field(default_factory=NumericChoice)
    categorical: CategoricalChoice = Field(default_factory=CategoricalChoice)
    features: dict[str, NumericChoice | CategoricalChoice] = Field(
        default_factory=dict, description="Per-feature overrides, by column name.")
    runner: str = Field(default="DirectRunner", min_length=1)
    pipeline_options: dict[str, object] = Field(default_factory=dict)

    def numeric_for(self, name: str) -> NumericChoice:
        """The choice for numeric column ``name``."""
        return _as(NumericChoice, name, self.features.get(name, self.numeric), "numeric")

    def categorical_for(self, name: str) -> CategoricalChoice:
        """The choice for string column ``name``."""
        return _as(CategoricalChoice, name, self.features.get(name, self.categorical),
                   "string")


def _as(kind: type[_C], name: str, choice: _Config, what: str) -> _C:
    """An override parsed as the other kind (its fields fit both) is re-read as ``kind``;
    options that only make sense for the other kind are a config error naming the feature."""
    if isinstance(choice, kind):
        return choice
    try:
        return kind.model_validate(choice.model_dump(exclude_unset=True))
    except ValidationError:
        raise ConfigError(f"transform: feature '{name}' is {what} but its options do not "
                          f"apply to {what} features: "
                          f"{choice.model_dump(exclude_unset=True)}") from None


class NumericFit(BaseModel):
    """A fitted numeric feature: fill value, then (x - shift) / scale or buckets."""

    model_config = ConfigDict(extra="forbid")

    name: str
    impute: NumericImpute
    fill: float
    mode: Scale
    shift: float = 0.0
    scale: float = 1.0
    boundaries: list[float] = []


class CategoricalFit(BaseModel):
    """A fitted string feature: fill value, vocabulary (index 0 = out of vocabulary)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    impute: CategoricalImpute
    fill: str
    encoding: Encoding
    vocabulary: list[str]


class FittedTransform(BaseModel):
    """Everything needed to turn raw rows into the network's input, and labels into indices."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    label: str
    classes: list[str]  # [] for regression
    task: TaskName = TaskName.MULTICLASS
    # Regression: the train split's label mean and standard deviation. The network
    # learns (label - shift) / scale; its fixed last layer undoes it (see ModelSpec).
    label_shift: float = 0.0
    label_scale: float = 1.0
    numeric: list[NumericFit]
    categorical: list[CategoricalFit]
    fitted_on_rows: int

    @property
    def scaled(self) -> list[NumericFit]:
        """Numeric features scaled to one column each (first output block)."""
        return [f for f in self.numeric if f.mode != "bucketize"]

    @property
    def bucketized(self) -> list[NumericFit]:
        """Numeric features one-hot encoded by bucket (second output block)."""
        return [f for f in self.numeric if f.mode == "bucketize"]

    @property
    def raw_features(self) -> list[str]:
        """Input columns in the order the raw-input models take them."""
        return [f.name for f in self.numeric] + [f.name for f in self.categorical]

    def output_columns(self) -> list[str]:
        """Names of the transformed columns, in the shared output order."""
        out = [f.name for f in self.scaled]
        for f in self.bucketized:
            out += [f"{f.name}__bucket{i}" for i in range(len(f.boundaries) + 1)]
        for c in self.categorical:
            out += ([c.name] if c.encoding == "index"
                    else [f"{c.name}__oov", *(f"{c.name}={v}" for v in c.vocabulary)])
        return out

    def raw_arrays(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(float64 numeric matrix with NaN for missing, object matrix of strings, '' missing)."""
        try:
            return raw_arrays(frame, [f.name for f in self.numeric],
                              [c.name for c in self.categorical])
        except ValueError as err:  # a missing column
            raise DataError(str(err)) from None

    def apply(self, frame: pd.DataFrame) -> np.ndarray:
        """Transform raw rows to the float32 matrix the networks take."""
        num, cat = self.raw_arrays(frame)
        return self.apply_arrays(num, cat)

    def apply_arrays(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """:meth:`apply` on the raw arrays of :meth:`raw_arrays`."""
        fill = np.array([f.fill for f in self.numeric], dtype=np.float64)
        num = np.where(np.isnan(num), fill, num)
        blocks = []
        idx = {f.name: i for i, f in enumerate(self.numeric)}
        scaled = [idx[f.name] for f in self.scaled]
        shift = np.array([f.shift for f in self.scaled], dtype=np.float64)
        scale = np.array([f.scale for f in self.scaled], dtype=np.float64)
        blocks.append((num[:, scaled] - shift) / scale)
        for f in self.bucketized:
            bucket = np.searchsorted(np.asarray(f.boundaries), num[:, idx[f.name]], side="right")
            blocks.append(np.eye(len(f.boundaries) + 1)[bucket])
        for j, c in enumerate(self.categorical):
            lookup = {v: i + 1 for i, v in enumerate(c.vocabulary)}
            values = np.where(cat[:, j] == "", c.fill, cat[:, j])
            codes = np.array([lookup.get(v, 0) for v in values], dtype=np.int64)
            blocks.append(codes[:, None].astype(np.float64) if c.encoding == "index"
                          else np.eye(len(c.vocabulary) + 1)[codes])
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def encode_labels(self, labels: pd.Series) -> np.ndarray:
        """Map raw label values (as strings) to class indices; unknown classes fail.

        Regression labels stay values in their own units (float32); the loss and the
        model's last layer apply the standardisation.
        """
        if not get_task(self.task).is_classifier:
            values = pd.to_numeric(labels, errors="coerce")
            if values.isna().any():
                bad = labels[values.isna()].astype(str).unique()[:10].tolist()
                raise DataError(f"label column '{self.label}': not numbers: {bad}")
            return values.to_numpy(dtype=np.float32)
        index = {c: i for i, c in enumerate(self.classes)}
        codes = labels.astype(str).map(index)
        if codes.isna().any():
            unseen = sorted(set(labels.astype(str)[codes.isna()]))[:10]
            raise DataError(f"label column '{self.label}': unseen label classes {unseen}")
        return codes.to_numpy(dtype=np.int64)

    def save(self, path: Path) -> None:
        """Write as JSON to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> FittedTransform:
        """Read a transform written by :meth:`save`."""
        return cls.model_validate_json(path.read_text(encoding="utf-8"))
