"""The compression table and its size/latency/accuracy plot, logged to MLflow."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import mlflow

from components.compress.variants import QualityGate, Selection, VariantResult
from components.config import CompressConfig
from components.export.manifest import FP32

log = logging.getLogger(__name__)
TABLE_FILE = "compression/variants.json"
FIGURE_FILE = "compression/variants.png"


def ratios(result: VariantResult, results: Sequence[VariantResult]) -> dict[str, float]:
    """Size, batch-1 speed-up and score change (variant - fp32: an accuracy drop is
    negative, an RMSE growth positive) against the row's fp32 baseline."""
    base = next((r for r in results if r.name == result.baseline), result)
    return {"size_x": result.bytes / base.bytes,
            "speedup_b1": base.p50_b1_ms / result.p50_b1_ms,
            "speedup_b64": base.p50_b64_ms / result.p50_b64_ms,
            "score_change": result.score - base.score}


def table_columns(results: Sequence[VariantResult], selection: Selection,
                  chosen: str) -> dict[str, list[object]]:
    """Column-wise table (mlflow.log_table's dict form) with the gate verdict per row."""
    rows = []
    for r in results:
        verdict = (FP32 if r.is_fp32 else "chosen" if r.name == chosen
                   else selection.rejected.get(r.name, "passed"))
        rows.append({**r.row(), **{k: round(v, 4) for k, v in ratios(r, results).items()},
                     "gate": verdict})
    return {key: [row[key] for row in rows] for key in rows[0]}


def markdown(results: Sequence[VariantResult], selection: Selection, chosen: str) -> str:
    """The table as Markdown (for bench/RESULTS.md and logs)."""
    cols = table_columns(results, selection, chosen)
    head = ["name", "format", "bytes", "size_x", "gzip_bytes", "score", "score_change",
            "p50_b1_ms", "p99_b1_ms", "speedup_b1", "p50_b64_ms", "p99_b64_ms", "speedup_b64",
            "gate"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i in range(len(results)):
        cells = [_fmt(cols[h][i]) for h in head]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def log_report(config: CompressConfig, results: Sequence[VariantResult], selection: Selection,
               chosen: str, gate: QualityGate) -> None:
    """Log the whole table and the plot to the active run."""
    mlflow.log_table(table_columns(results, selection, chosen), artifact_file=TABLE_FILE)
    mlflow.log_figure(plot(results, chosen, gate), FIGURE_FILE)
    mlflow.log_params({"max_accuracy_drop": config.max_accuracy_drop,
                       "max_relative_change": config.max_relative_change,
                       "pruning_sparsity": config.pruning_sparsity,
                       "latency_calls": config.latency_calls})
    log.info("compression variants:\n%s", markdown(results, selection, chosen))


def plot(results: Sequence[VariantResult], chosen: str, gate: QualityGate):  # type: ignore[no-untyped-def]
    """Three bar charts sharing the variant axis: size (KiB), batch-1 p50 (ms), score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in results]
    colours = ["tab:green" if n == chosen else "tab:grey" if r.is_fp32 else "tab:blue"
               for n, r in zip(names, results, strict=True)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.45 * len(results) + 1.5), sharey=True)
    panels = (("size (KiB)", [r.bytes / 1024 for r in results]),
              ("latency p50, batch 1 (ms)", [r.p50_b1_ms for r in results]),
              (f"test {gate.metric}", [r.score for r in results]))
    for ax, (title, values) in zip(axes, panels, strict=True):
        ax.barh(names, values, color=colours)
        ax.set_title(title)
        ax.invert_yaxis()
    fp32 = [r.score for r in results if r.is_fp32]
    if gate.relative:
        bar = min(fp32, default=0.0) * (1 + gate.limit)
    else:
        bar = max(fp32, default=0.0) - gate.limit
        axes[2].set_xlim(max(0.0, min(r.score for r in results) - 0.02), 1.0)
    axes[2].axvline(bar, color="tab:red", linestyle="--", label="gate")
    axes[2].legend(loc="lower right")
    fig.suptitle(f"compression variants (green: chosen = {chosen}; grey: fp32)")
    fig.tight_layout()
    plt.close(fig)
    return fig
