"""The model card of a registered version: what it is, what it was trained on, how good.

Push writes it for every version it registers, as the version's description (the
Markdown, which the MLflow UI renders on the version's page) and as artifacts of the
push run (``model_card/model_card.md`` and ``.html``). Its figures are read from
where the steps recorded them, not recomputed: the data set's metadata and schema,
evaluate's metrics, verdict and slice table (its step run), compress's table and
the exports manifest, train's time and hardware (its step run). Outside a pipeline
(no sibling step runs) those sections say so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from jinja2 import Environment
from markupsafe import Markup
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from components.compress.core import COMPRESSION_FILE
from components.data.dataset import DatasetMetadata
from components.data.schema import SCHEMA_FILE, DataSchema
from components.export.manifest import ExportManifest
from components.tags import FRAMEWORK_TAG, HARDWARE_TAG, STEP_TAG, VERDICT_TAG, Step

log = logging.getLogger(__name__)
CARD_ARTIFACT_DIR = "model_card"
CARD_MARKDOWN = "model_card.md"
CARD_HTML = "model_card.html"
TRAIN_FIGURES = ("train_seconds", "train_samples_per_second", "model_parameters",
                 "peak_rss_mb")


@dataclass
class CardFacts:
    """Everything the card shows, gathered before it is rendered."""

    name: str
    version: str
    framework: str
    model_kind: str
    meta: DatasetMetadata
    manifest: ExportManifest
    metrics: dict[str, float]
    pipeline_run: str
    schema: pd.DataFrame | None = None
    verdict: str = ""
    slices: pd.DataFrame | None = None
    compression: pd.DataFrame | None = None
    chosen: str = ""
    training: dict[str, Any] = field(default_factory=dict)


def gather(facts: CardFacts, raw_dir: Path | None, exports_dir: Path) -> CardFacts:
    """Fill the optional sections from the raw data's schema, the compression table and
    the sibling step runs of the pipeline run."""
    if raw_dir is not None and (raw_dir / SCHEMA_FILE).is_file():
        facts.schema = _schema_table(DataSchema.model_validate_json(
            (raw_dir / SCHEMA_FILE).read_text(encoding="utf-8")), facts.meta)
    table = exports_dir / COMPRESSION_FILE
    if table.is_file():
        compression = json.loads(table.read_text(encoding="utf-8"))
        facts.compression = pd.DataFrame(compression.get("variants", []))
        facts.chosen = str(compression.get("chosen", ""))
    evaluate = _sibling(facts.pipeline_run, Step.EVALUATE, facts.framework)
    if evaluate is not None:
        facts.verdict = evaluate.data.tags.get(VERDICT_TAG, "")
        facts.slices = _slices(evaluate.info.run_id)
    train = _sibling(facts.pipeline_run, Step.TRAIN, facts.framework)
    if train is not None:
        facts.training = {k: train.data.metrics[k] for k in TRAIN_FIGURES
                          if k in train.data.metrics}
        facts.training |= {k: train.data.params[k] for k in ("epochs", "workers_used",
                                                             "batch_size", "precision")
                           if k in train.data.params}
        facts.training["hardware"] = train.data.tags.get(HARDWARE_TAG, "not recorded")
    return facts


def _schema_table(schema: DataSchema, meta: DatasetMetadata) -> pd.DataFrame:
    rows = []
    for name, col in schema.columns.items():
        values = (f"{col.min:.6g} .. {col.max:.6g}" if col.kind == "numeric"
                  and col.min is not None and col.max is not None
                  else f"{len(col.domain or [])} values" if col.domain is not None else "")
        rows.append({"column": name, "role": "label" if name == meta.label else "feature",
                     "kind": col.kind, "source type": meta.source_types.get(name, ""),
                     "values": values, "missing": f"{col.missing_rate:.1%}"})
    return pd.DataFrame(rows)


def _sibling(pipeline_run: str, step: str, framework: str) -> Run | None:
    """The step run of ``step`` for ``framework`` under the same pipeline run."""
    if not pipeline_run:
        return None
    client = MlflowClient()
    parent = client.get_run(pipeline_run)
    found = client.search_runs(
        [parent.info.experiment_id],
        filter_string=(f"tags.`mlflow.parentRunId` = '{pipeline_run}' and "
                       f"tags.`{STEP_TAG}` = '{step}' and tags.`{FRAMEWORK_TAG}` = "
                       f"'{framework}'"), max_results=1)
    return found[0] if found else None


def _slices(run_id: str) -> pd.DataFrame | None:
    """Evaluate's per-slice table (mlflow.log_table JSON), if it logged one."""
    files = [a.path for a in MlflowClient().list_artifacts(run_id, "slices")]
    if not files:
        return None
    table = mlflow.artifacts.load_dict(f"runs:/{run_id}/{files[0]}")
    return pd.DataFrame(table["data"], columns=table["columns"])


def _markdown_table(frame: pd.DataFrame | None) -> str:
    if frame is None or frame.empty:
        return "_not recorded_"
    return str(frame.to_markdown(index=False, floatfmt=".4g"))


def _html_table(frame: pd.DataFrame | None) -> str:
    if frame is None or frame.empty:
        return "<p><em>not recorded</em></p>"
    return str(frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0))


def _sections(facts: CardFacts, table: Any) -> dict[str, Any]:
    """The template's values; ``table`` renders a DataFrame (Markdown or HTML)."""
    meta, manifest = facts.meta, facts.manifest
    metrics = pd.DataFrame([{"metric": k, "value": v} for k, v in sorted(facts.metrics.items())
                            if k.startswith("test_")])
    exports = pd.DataFrame([{"entry": k, "format": e.format.value, "variant": e.variant,
                             "input": e.input, "bytes": e.bytes}
                            for k, e in manifest.entries.items()])
    training = pd.DataFrame([{"figure": k, "value": f"{v:.4g}" if isinstance(v, float) else v}
                             for k, v in facts.training.items()])
    splits = ", ".join(f"{s} {n:,}" for s, n in meta.rows.items())
    return {"f": facts, "meta": meta, "splits": splits, "task": meta.task.value,
            "classes": ", ".join(meta.classes) or "(regression)",
            "serving": manifest.serving_default, "preferred": manifest.preferred,
            "schema": table(facts.schema), "metrics": table(metrics),
            "slices": table(facts.slices), "compression": table(facts.compression),
            "exports": table(exports), "training": table(training),
            "verdict": facts.verdict or "not recorded"}


_MARKDOWN = """# {{ f.name }} version {{ f.version }}

{{ f.framework }} `{{ f.model_kind }}`, {{ task }} of `{{ meta.label }}` \
(classes: {{ classes }}). Pipeline run `{{ f.pipeline_run or "none" }}`.

## Data
Data set `{{ meta.name }}` from `{{ meta.source }}`, digest `{{ meta.digest }}`; \
rows: {{ splits }}.

{{ schema }}

## Quality (test split)
{{ metrics }}

Verdict: {{ verdict }}

### Per slice
{{ slices }}

## Compression and exports
Chosen variant: `{{ f.chosen or preferred }}`; served by default: `{{ serving }}`.

{{ compression }}

{{ exports }}

## Training
{{ training }}
"""

_HTML = """<!doctype html><html><head><meta charset="utf-8">
<title>{{ f.name }} v{{ f.version }}</title>
<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:
collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}</style>
</head><body><h1>{{ f.name }} version {{ f.version }}</h1>
<p>{{ f.framework }} <code>{{ f.model_kind }}</code>, {{ task }} of <code>{{ meta.label }}\
</code> (classes: {{ classes }}). Pipeline run <code>{{ f.pipeline_run or "none" }}</code>.</p>
<h2>Data</h2><p>Data set <code>{{ meta.name }}</code> from <code>{{ meta.source }}</code>,
digest <code>{{ meta.digest }}</code>; rows: {{ splits }}.</p>{{ schema }}
<h2>Quality (test split)</h2>{{ metrics }}<p>Verdict: {{ verdict }}</p>
<h3>Per slice</h3>{{ slices }}
<h2>Compression and exports</h2><p>Chosen variant: <code>{{ f.chosen or preferred }}</code>;
served by default: <code>{{ serving }}</code>.</p>{{ compression }}{{ exports }}
<h2>Training</h2>{{ training }}</body></html>
"""


def render(facts: CardFacts) -> tuple[str, str]:
    """(Markdown, HTML) of the card."""
    md_env = Environment(autoescape=False, keep_trailing_newline=True)
    html_env = Environment(autoescape=True)
    markdown = md_env.from_string(_MARKDOWN).render(**_sections(facts, _markdown_table))
    html_values = _sections(facts, _html_table)
    for key in ("schema", "metrics", "slices", "compression", "exports", "training"):
        html_values[key] = Markup(html_values[key])  # pandas' own escaped table markup
    return markdown, html_env.from_string(_HTML).render(**html_values)


def write_card(facts: CardFacts) -> str:
    """Log the card in the active (push) run and set it as the version's description;
    return the Markdown artifact's URI."""
    markdown, html = render(facts)
    mlflow.log_text(markdown, f"{CARD_ARTIFACT_DIR}/{CARD_MARKDOWN}")
    mlflow.log_text(html, f"{CARD_ARTIFACT_DIR}/{CARD_HTML}")
    MlflowClient().update_model_version(facts.name, facts.version, description=markdown)
    run = mlflow.active_run()
    return f"runs:/{run.info.run_id if run else ''}/{CARD_ARTIFACT_DIR}/{CARD_MARKDOWN}"
