"""The data schema inferred on first ingest, and validation of later data against it.

The schema records what "normal" data looks like: column kinds, required
columns, value ranges, category domains, label classes, missing rates and a
reference distribution per feature (101 quantiles or category frequencies of
the train split). Later ingests compare their statistics with it; drift is the
Jensen-Shannon divergence (base 2, in [0, 1]; as TFDV's drift comparator)
between histograms over the reference's deciles (numeric) or the
L-infinity distance between category frequencies (categorical).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from components.data.statistics import FeatureStats
from components.errors import DataError

log = logging.getLogger(__name__)
SCHEMA_FILE = "schema.json"
DOMAIN_LIMIT = 100
DRIFT_BIN_STEP = 10  # deciles of the reference: coarse enough for small samples


class ColumnSchema(BaseModel):
    """What one column looked like when the schema was inferred."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["numeric", "categorical"]
    required: bool
    min: float | None = None
    max: float | None = None
    domain: list[str] | None = None
    missing_rate: float = 0.0
    reference_quantiles: list[float] = []
    reference_frequencies: dict[str, float] = {}


class DataSchema(BaseModel):
    """Schema of a data set; stored as ``schema.json`` and in MLflow."""

    model_config = ConfigDict(extra="forbid")

    name: str
    label: str
    columns: dict[str, ColumnSchema]
    classes: list[str]  # [] for regression
    task: str = ""  # the resolved task; '' in schemas written before tasks existed

    @property
    def features(self) -> list[str]:
        """Feature columns in order (all but the label)."""
        return [c for c in self.columns if c != self.label]


class Anomaly(BaseModel):
    """One finding of validation; ``error`` fails the pipeline."""

    column: str
    problem: str
    severity: Literal["warning", "error"]
    detail: str

    def line(self) -> str:
        """One human-readable line naming the column and the problem."""
        return f"column '{self.column}': {self.problem}: {self.detail}"


def infer_schema(name: str, label: str, classes: list[str], stats: dict[str, FeatureStats],
                 train: dict[str, FeatureStats], task: str = "") -> DataSchema:
    """Schema from the statistics of the whole data (ranges) and train (reference)."""
    columns = {}
    for col, s in stats.items():
        ref = train.get(col, s)
        domain = None
        if s.kind == "categorical" and s.distinct is not None and s.distinct <= DOMAIN_LIMIT:
            domain = sorted(s.frequencies)
        columns[col] = ColumnSchema(
            kind="numeric" if s.kind == "numeric" else "categorical", required=s.missing == 0,
            min=s.min, max=s.max, domain=domain, missing_rate=s.missing_rate,
            reference_quantiles=ref.quantiles, reference_frequencies=ref.frequencies)
    return DataSchema(name=name, label=label, columns=columns, classes=classes, task=task)


def save_schema(schema: DataSchema, path: Path) -> None:
    """Write the schema as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema.model_dump_json(indent=2), encoding="utf-8")


def load_schema(path: Path) -> DataSchema:
    """Read a schema written by :func:`save_schema`."""
    try:
        return DataSchema.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable twinflow schema: {err}") from None


def check_columns(schema: DataSchema, found: dict[str, str]) -> list[Anomaly]:
    """Missing, extra and re-typed columns (known before reading the data)."""
    out = [Anomaly(column=c, problem="missing column", severity="error",
                   detail=f"in the schema of '{schema.name}' but not in the data")
           for c in schema.columns if c not in found]
    out += [Anomaly(column=c, problem="extra column", severity="warning",
                    detail="not in the schema; dropped") for c in found if c not in schema.columns]
    for col, kind in found.items():
        want = schema.columns.get(col)
        if want and col != schema.label and want.kind == "numeric" and kind != "numeric":
            out.append(Anomaly(column=col, problem="type changed", severity="error",
                               detail=f"was {want.kind}, now {kind}"))
    return out


def check_statistics(stats: dict[str, FeatureStats], label: str, classes: list[str],
                     schema: DataSchema | None, train: dict[str, FeatureStats],
                     drift_threshold: float, missing_spike: float) -> list[Anomaly]:
    """Anomalies of this data on its own and, when a schema exists, against it."""
    out = [Anomaly(column=c, problem="all values missing", severity="error",
                   detail=f"{s.missing} rows, none with a value")
           for c, s in stats.items() if s.count == 0 and s.missing > 0]
    if schema is None:
        return out
    unseen = sorted(set(classes) - set(schema.classes))
    if unseen:
        out.append(Anomaly(column=label, problem="unseen label classes", severity="error",
                           detail=f"{unseen[:10]} not among the schema's classes"))
    for col, s in stats.items():
        want = schema.columns.get(col)
        if want is None or col == label or s.count == 0:
            continue
        out += _against(col, s, want, missing_spike)
        distance = drift(want, train.get(col, s))
        if distance is not None and distance > drift_threshold:
            out.append(Anomaly(column=col, problem="drift", severity="error",
                               detail=f"distance {distance:.3f} > threshold {drift_threshold}"))
    return out


def _against(col: str, s: FeatureStats, want: ColumnSchema, spike: float) -> list[Anomaly]:
    out = []
    if want.kind == "numeric" and want.min is not None and want.max is not None and (
            (s.min is not None and s.min < want.min) or (s.max is not None and s.max > want.max)):
        out.append(Anomaly(column=col, problem="out of range", severity="warning",
                           detail=f"values in [{s.min}, {s.max}], schema range "
                                  f"[{want.min}, {want.max}]"))
    if want.domain is not None:
        new = sorted(set(s.frequencies) - set(want.domain))
        if new:
            out.append(Anomaly(column=col, problem="unseen categories", severity="warning",
                               detail=f"{new[:10]}"))
    if s.missing_rate - want.missing_rate > spike or (want.required and s.missing):
        out.append(Anomaly(column=col, problem="missing-rate spike", severity="error",
                           detail=f"{s.missing_rate:.1%} missing, was {want.missing_rate:.1%}"))
    return out


def drift(want: ColumnSchema, now: FeatureStats) -> float | None:
    """JS divergence (numeric, base 2, in [0, 1]) or L-infinity (categorical) to the reference."""
    if want.kind == "numeric":
        if not want.reference_quantiles or not now.quantiles:
            return None
        from scipy.spatial.distance import jensenshannon

        edges = np.unique(want.reference_quantiles[::DRIFT_BIN_STEP])
        p, q = _histogram(want.reference_quantiles, edges), _histogram(now.quantiles, edges)
        return float(jensenshannon(p, q, base=2)) ** 2
    if not want.reference_frequencies or not now.frequencies:
        return None
    keys = set(want.reference_frequencies) | set(now.frequencies)
    return max(abs(want.reference_frequencies.get(k, 0.0) - now.frequencies.get(k, 0.0))
               for k in keys)


def _histogram(quantiles: list[float], edges: np.ndarray) -> np.ndarray:
    """Mass per bin (-inf, e0], (e0, e1], ..., (e_last, inf) from a quantile list.

    The CDF at x is the share of quantile points <= x, so ties (e.g. many zero
    pixels) keep their mass.
    """
    q = np.sort(np.asarray(quantiles))
    cdf = np.searchsorted(q, edges, side="right") / len(q)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def raise_severe(anomalies: list[Anomaly], where: str) -> None:
    """Log every anomaly; raise a DataError listing the severe ones."""
    for a in anomalies:
        (log.error if a.severity == "error" else log.warning)("%s: %s", where, a.line())
    severe = [a.line() for a in anomalies if a.severity == "error"]
    if severe:
        raise DataError(f"{where}: " + "; ".join(severe[:5])
                        + (f" (and {len(severe) - 5} more)" if len(severe) > 5 else ""))
