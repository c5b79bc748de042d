"""The comparison as charts, a self-contained HTML page, and MLflow artifacts."""

from __future__ import annotations

import base64
import html
import io
import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from components.compare.core import Comparison, Row, present_rows, recommend, table
from components.config import Priority
from components.tags import RECOMMENDATION_TAG

log = logging.getLogger(__name__)
CHARTS = {
    "accuracy": [Row.TEST_ACCURACY, Row.INT8_ACCURACY],
    "error": [Row.TEST_RMSE, Row.TEST_MAE, Row.INT8_RMSE],
    "latency": [Row.FP32_LATENCY_P50, Row.FP32_LATENCY_P99,
                Row.INT8_LATENCY_P50, Row.INT8_LATENCY_P99],
    "size": [Row.FP32_SIZE, Row.INT8_SIZE],
    "training": [Row.TRAIN_SECONDS, Row.TRAIN_PEAK_MEMORY],
}


def charts(comparison: Comparison) -> dict[str, Figure]:
    """One grouped bar chart per theme, frameworks side by side."""
    figures = {}
    present = set(present_rows(comparison))
    for name, chosen in CHARTS.items():
        rows = [r for r in chosen if r in present]
        if not rows:  # e.g. no accuracy chart for a regression run
            continue
        data = _chart_data(comparison, rows)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        data.plot.bar(ax=ax, rot=15)
        ax.set_title(f"{' vs '.join(f.framework for f in comparison.frameworks)}: {name}")
        ax.set_xlabel("")
        fig.tight_layout()
        figures[name] = fig
    return figures


def _chart_data(comparison: Comparison, rows: list[Row]) -> pd.DataFrame:
    """Figures ``rows`` of both frameworks, indexed by display label (the bars' ticks)."""
    index = pd.Index([row.label for row in rows], name="figure")
    return pd.DataFrame({f.framework: [f.values[row] for row in rows]
                         for f in comparison.frameworks}, index=index, dtype=float)


def to_html(comparison: Comparison, figures: dict[str, Figure], prefer: Priority) -> str:
    """A self-contained page: recommendations, the table, the charts inlined as PNG."""
    lines = "".join(f"<li>{html.escape(recommend(comparison, p))}</li>" for p in Priority)
    frame = table(comparison)
    images = "".join(f'<h3>{html.escape(n)}</h3><img alt="{html.escape(n)}" '
                     f'src="data:image/png;base64,{_png(f)}"/>' for n, f in figures.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>twinflow comparison "
            f"{comparison.parent_run_id}</title><style>body{{font-family:sans-serif}}"
            "td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style></head><body>"
            f"<h1>twinflow framework comparison</h1><p>pipeline run "
            f"{html.escape(comparison.parent_run_id)}</p>"
            f"<h2>Recommendation</h2><p><b>{html.escape(recommend(comparison, prefer))}</b>"
            f"</p><ul>{lines}</ul><h2>Side by side</h2>"
            f"{frame.to_html(index=False, na_rep='n/a', float_format=_fmt)}"
            f"<h2>Charts</h2>{images}</body></html>")


def log_report(comparison: Comparison, prefer: Priority) -> tuple[str, str]:
    """Log table, charts and page on the parent run; return (recommendation, page)."""
    client, run_id = MlflowClient(), comparison.parent_run_id
    frame = table(comparison)
    client.log_table(run_id, _stringified(frame), "comparison/table.json")
    figures = charts(comparison)
    for name, fig in figures.items():
        client.log_figure(run_id, fig, f"comparison/{name}.png")
    page = to_html(comparison, figures, prefer)
    client.log_text(run_id, page, "comparison/report.html")
    for fig in figures.values():
        plt.close(fig)
    line = recommend(comparison, prefer)
    client.set_tag(run_id, RECOMMENDATION_TAG, line)
    log.info("%s", line)
    return line, page


def _stringified(frame: pd.DataFrame) -> pd.DataFrame:
    """MLflow tables want one type per column: show numbers as text."""
    return frame.map(lambda v: _fmt(v) if isinstance(v, float) else ("n/a" if v is None else v))


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode()
