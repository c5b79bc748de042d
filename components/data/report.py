"""A readable HTML view of the statistics and anomalies (logged to MLflow beside the JSON)."""

from __future__ import annotations

from html import escape

from components.data.schema import Anomaly
from components.data.statistics import FeatureStats

_STYLE = ("body{font-family:sans-serif}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
          ".error{color:#b00}.warning{color:#a60}")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _row(name: str, s: FeatureStats) -> str:
    q = s.quantiles
    median = _num(q[len(q) // 2]) if q else ""
    top = ", ".join(f"{escape(v)} ({n})" for v, n in s.top[:5])
    cells = [escape(name), s.kind, str(s.count), f"{s.missing_rate:.1%}", _num(s.mean),
             _num(s.std), _num(s.min), median, _num(s.max),
             "" if s.distinct is None else str(s.distinct), top]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_html(title: str, splits: dict[str, dict[str, FeatureStats]],
                anomalies: list[Anomaly], bad_rows: int) -> str:
    """One table per split, anomalies first."""
    head = ("<tr><th>column</th><th>kind</th><th>count</th><th>missing</th><th>mean</th>"
            "<th>std</th><th>min</th><th>median</th><th>max</th><th>distinct</th>"
            "<th>top values</th></tr>")
    parts = [f"<html><head><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>",
             f"<p>Rejected rows: {bad_rows}</p><h2>Anomalies</h2><ul>"]
    parts += [f"<li class='{a.severity}'>{a.severity}: {escape(a.line())}</li>"
              for a in anomalies] or ["<li>none</li>"]
    parts.append("</ul>")
    for split, stats in splits.items():
        parts.append(f"<h2>{escape(split)}</h2><table>{head}")
        parts += [_row(name, s) for name, s in stats.items()]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
