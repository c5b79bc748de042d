"""The compression gate: a pure function over measured variants."""

from __future__ import annotations

import numpy as np
import pytest

from components.compress.variants import QualityGate, VariantResult, select_best
from components.tasks import Outputs


def _gate(limit: float) -> QualityGate:
    return QualityGate(Outputs.LOGITS, limit)


def _row(name: str, accuracy: float, p50: float, size: int = 100, baseline: str = "fp32_x",
         variant: str = "int8") -> VariantResult:
    return VariantResult(name, "onnx", variant, baseline, size, size, accuracy, p50, p50 * 2,
                         p50 * 10, p50 * 20)


BASE = _row("fp32_x", 0.95, 1.0, size=400, baseline="", variant="fp32")


def test_fastest_passing_variant_wins() -> None:
    rows = [BASE, _row("slow", 0.95, 0.8), _row("fast", 0.946, 0.3), _row("bad", 0.90, 0.1)]
    selection = select_best(rows, _gate(0.005))
    assert selection.best is not None and selection.best.name == "fast"
    assert set(selection.rejected) == {"bad"}
    assert "accuracy drop 0.0500 > 0.0050" in selection.rejected["bad"]


def test_ties_in_latency_go_to_the_smaller_file() -> None:
    rows = [BASE, _row("big", 0.95, 0.5, size=300), _row("small", 0.95, 0.5, size=120)]
    selection = select_best(rows, _gate(0.005))
    assert selection.best is not None and selection.best.name == "small"


def test_latencies_within_the_tie_band_go_to_the_smaller_file() -> None:
    # A pruned variant keeps the fp32 file size; a few percent of timing noise must not
    # let it beat an int8 file a third its size.
    rows = [BASE, _row("pruned", 0.95, 0.0182, size=400), _row("int8", 0.95, 0.0190, size=120)]
    assert select_best(rows, _gate(0.005)).best == rows[2]
    assert select_best(rows, _gate(0.005), latency_tie=0.0).best == rows[1]
    clearly_faster = _row("pruned", 0.95, 0.0150, size=400)
    assert select_best([BASE, clearly_faster, rows[2]], _gate(0.005)).best == clearly_faster


def test_fp32_rows_are_never_chosen_and_none_may_pass() -> None:
    rows = [BASE, _row("worse", 0.93, 0.1)]
    selection = select_best(rows, _gate(0.005))
    assert selection.best is None
    assert select_best(rows, _gate(0.05)).best == rows[1]  # a looser gate lets it through
    assert select_best([BASE], _gate(0.5)).best is None


def test_drop_is_measured_against_the_variants_own_baseline() -> None:
    other = _row("fp32_y", 0.80, 1.0, baseline="", variant="fp32")
    rows = [BASE, other, _row("y_int8", 0.799, 0.2, baseline="fp32_y"),
            _row("orphan", 0.99, 0.01, baseline="missing")]
    selection = select_best(rows, _gate(0.005))
    assert selection.best is not None and selection.best.name == "y_int8"
    assert "no fp32 baseline 'missing'" in selection.rejected["orphan"]


def test_regression_gate_is_relative_to_the_baseline_rmse() -> None:
    gate = QualityGate(Outputs.VALUES, 0.02, "rmse")
    base = _row("fp32_x", 50.0, 1.0, size=400, baseline="", variant="fp32")
    slight = _row("slight", 50.9, 0.5, size=100)  # RMSE +1.8%
    much = _row("much", 52.0, 0.4, size=90)  # RMSE +4%
    selection = select_best([base, slight, much], gate)
    assert selection.best == slight
    assert selection.rejected == {"much": "RMSE +4.00% > 2.00%"}
    assert gate.score(np.array([[1.0], [3.0]]), np.array([1.0, 1.0])) == pytest.approx(2 ** 0.5)
