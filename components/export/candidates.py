"""What a framework's variant builder hands the compress step: written files, by format.

A framework package writes its fp32 exports and compressed variants
(``FrameworkAdapter.build_variants``) and describes each as a
:class:`Candidate`; the compress step measures, gates and ships them knowing
only their format. Nothing here imports a framework.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from components.export.manifest import FP32, ExportFormat
from components.export.runtime import Predict
from components.transform.fitted import FittedTransform

log = logging.getLogger(__name__)
RawExporter = Callable[[FittedTransform, Path], Path]  # writes a raw version of one entry


@dataclass(frozen=True)
class Candidate:
    """A written variant, before measurement."""

    name: str
    format: ExportFormat
    path: Path
    variant: str = FP32
    baseline: str = ""  # name of the fp32 candidate of the same format ("" for fp32 itself)
    note: str = ""
    # Writer of its raw-input twin, for a format whose file cannot be extended with the
    # transform afterwards (TFLite; see components.export.raw.raw_exports).
    raw_exporter: RawExporter | None = None


@dataclass(frozen=True)
class Built:
    """What a framework's variant builder returns: the candidates (fp32 exports first)
    and the in-memory fp32 model's predict function, the reference for reloads.
    ``skipped`` names variants that do not apply to this model, with the reason."""

    candidates: list[Candidate]
    reference: Predict
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def raw_exporters(self) -> dict[str, RawExporter]:
        """Candidate name -> writer of its raw-input twin (see Candidate.raw_exporter)."""
        return {c.name: c.raw_exporter for c in self.candidates if c.raw_exporter}


@dataclass(frozen=True)
class RawModel:
    """The raw-input model a train step wrote (transform + network), as a framework
    adapter describes it: where it is and in which format."""

    path: Path
    format: ExportFormat


class VariantSet:
    """Collects a builder's candidates; a variant that does not apply to this model (its
    conversion raises: an op the quantiser or converter does not support, a layer
    pruning does not know) is recorded in ``skipped`` with the reason instead of
    failing the step. The fp32 export of the framework's own format is the one that
    must succeed (``required``)."""

    def __init__(self) -> None:
        self.candidates: list[Candidate] = []
        self.skipped: dict[str, str] = {}

    def add(self, name: str, build: Callable[[], Candidate | list[Candidate]],
            required: bool = False) -> Candidate | None:
        """Run ``build``; its (first) candidate, or None when it was skipped."""
        try:
            got = build()
        except Exception as err:
            if required:
                raise
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            log.warning("variant %s skipped: %s", name, reason)
            self.skipped[name] = reason
            return None
        items = got if isinstance(got, list) else [got]
        self.candidates += items
        return items[0] if items else None

    def built(self, reference: Predict) -> Built:
        """The builder's result."""
        return Built(self.candidates, reference, dict(self.skipped))
