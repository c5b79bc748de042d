"""Two real local pipeline runs shared by the registered-model and batch-scoring tests
(session fixtures, loaded by conftest's ``pytest_plugins``): a classifier on CSV rows
with an integer column, string columns and gaps (``shop``), and a regression on a
non-linear target with a string column (``house``); both frameworks each."""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.test_tasks import nonlinear_frame
from tests.test_transform_fit import mixed_frame
from tests.test_user_models import CliRun, _cli_run


@pytest.fixture
def keep_tracking_uri() -> Iterator[None]:
    """Tests that point MLflow at a run's store put the session's URI back afterwards
    (later modules register into it)."""
    previous = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(previous)


def shop_frame(rows: int, seed: int) -> pd.DataFrame:
    """mixed_frame plus an integer column (pandas reads it as int64)."""
    frame = mixed_frame(rows, seed=seed)
    frame.insert(2, "items", np.random.default_rng(seed).integers(0, 9, rows))
    return frame


def house_frame(rows: int, seed: int) -> pd.DataFrame:
    """A non-linear target plus a string column that shifts it."""
    frame = nonlinear_frame(rows, seed)
    zone = np.random.default_rng(seed).choice(["north", "south", "east"], rows)
    frame.insert(3, "zone", zone.astype(object))
    frame["target"] += np.select([zone == "north", zone == "south"], [30.0, -30.0], 0.0)
    return frame


def _run(tmp_path_factory: pytest.TempPathFactory, name: str, frame: pd.DataFrame,
         label: str, *args: str) -> CliRun:
    root = tmp_path_factory.mktemp(name)
    frame.to_csv(root / f"{name}.csv", index=False)
    rows = pd.read_csv(root / f"{name}.csv")  # as a user reads the file back
    return _cli_run(root, ["--framework", "both", "--data", f"{name}.csv", "--label", label,
                           *args], rows=rows)


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    return _run(tmp_path_factory, "shop", shop_frame(600, seed=5), "label", "--epochs", "12",
                "--min-accuracy", "0.6", "--slice-feature", "shape")


@pytest.fixture(scope="session")
def house(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    return _run(tmp_path_factory, "house", house_frame(900, seed=4), "target",
                "--epochs", "40")
