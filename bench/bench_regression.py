"""Issue 14 figure: regression quality of twinflow's `mlp` against scikit-learn on the
same split, in the same run.

For each data set (scikit-learn's diabetes, and a generated non-linear set: the
one tests/test_tasks.py uses) the data is ingested and transformed once by
twinflow's own steps; twinflow's trainer fits the zoo's `linear` and `mlp` per
framework (see SETTINGS), and
scikit-learn's `Ridge` and `HistGradientBoostingRegressor` fit the very same
transformed train split. Every model is scored on the same test split (R², RMSE).
twinflow's figure is the mean and spread over ``--seeds`` training seeds (the split
stays fixed); the baselines are deterministic given the split.

Usage: .venv/bin/python bench/bench_regression.py [--seeds 3]
Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error, r2_score

from components.config import IngestConfig, TrainConfig
from components.data.dataset import Split, read_arrays, read_metadata
from components.frameworks import get_adapter
from components.frameworks.base import ModelSpec
from components.ingest.core import run_ingest
from components.train.core import run_train
from components.transform.core import run_transform
from tests.test_tasks import nonlinear_frame


def prepare(root: Path, source: str, label: str) -> Path:
    """Ingest and transform ``source`` with twinflow's steps; the transformed data dir."""
    with mlflow.start_run():
        run_ingest(IngestConfig(source=source, label=label, schema_source="none"),
                   root / "raw")
        run_transform(root / "raw", root / "data", root / "transform.json")
    return root / "data"


@dataclass(frozen=True)
class Setting:
    """One twinflow model as a user would ask for it on the command line."""

    label: str
    model: str
    options: str = "{}"
    epochs: int = 300
    patience: int = 10  # --early-stopping-patience
    learning_rate: float = 1e-3


SETTINGS = (
    Setting("linear", "linear", learning_rate=0.01),
    Setting("mlp (64x2), early stopping", "mlp", '{"width": 64, "depth": 2}'),
    Setting("mlp (64x2), 100 epochs, no early stopping", "mlp", '{"width": 64, "depth": 2}',
            epochs=100, patience=0),
)


def twinflow_scores(data: Path, framework: str, seed: int,
                    setting: Setting) -> tuple[float, float]:
    """(R², RMSE) on the test split of twinflow's model trained with ``seed``."""
    model_dir = data.parent / f"model-{framework}-{setting.model}-{seed}-{setting.patience}"
    with mlflow.start_run():
        run_train(TrainConfig(framework=framework, epochs=setting.epochs, seed=seed,
                              model_ref=setting.model, model_options=setting.options,
                              learning_rate=setting.learning_rate,
                              early_stopping_patience=setting.patience, show_progress=False),
                  data, model_dir)
    adapter = get_adapter(framework)
    meta = read_metadata(data)
    test = read_arrays(data, Split.TEST, meta)
    kind = ModelSpec.load(model_dir).output_kind
    pred = adapter.predict(adapter.load_model(model_dir), test.x, kind)
    return _scores(test.y, pred)


def baseline_scores(data: Path) -> dict[str, tuple[float, float]]:
    """(R², RMSE) of Ridge and HistGradientBoostingRegressor on the same split."""
    meta = read_metadata(data)
    train, test = read_arrays(data, Split.TRAIN, meta), read_arrays(data, Split.TEST, meta)
    models = {"Ridge": Ridge(alpha=1.0),
              "HistGradientBoosting": HistGradientBoostingRegressor(random_state=0)}
    return {name: _scores(test.y, m.fit(train.x, train.y).predict(test.x))
            for name, m in models.items()}


def _scores(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    return float(r2_score(y, pred)), float(np.sqrt(mean_squared_error(y, pred)))


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return (f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} "
            f"[{min(values):.3f}, {max(values):.3f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"twinflow: mean ± std [min, max] over training seeds 1..{args.seeds}\n")
    print("| data set | model | test R² | test RMSE |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-regression-") as tmp:
        root = Path(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        csv = root / "nonlinear.csv"
        nonlinear_frame(1500, seed=3).to_csv(csv, index=False)
        for name, source, label in (("diabetes", "sklearn:diabetes", ""),
                                    ("non-linear (1500 rows)", str(csv), "target")):
            data = prepare(root / name.split()[0], source, label)
            for model, (r2, rmse) in baseline_scores(data).items():
                print(f"| {name} | scikit-learn {model} | {r2:.3f} | {rmse:.2f} |")
            for setting in SETTINGS:
                for fw in ("torch", "tensorflow"):
                    runs = [twinflow_scores(data, fw, seed, setting)
                            for seed in range(1, args.seeds + 1)]
                    print(f"| {name} | twinflow {setting.label}, {fw} | "
                          f"{_cell([r[0] for r in runs])} | {_cell([r[1] for r in runs])} |",
                          flush=True)


if __name__ == "__main__":
    main()
