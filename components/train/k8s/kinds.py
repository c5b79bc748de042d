"""The custom resources that run training workers on a cluster (no imports: the
framework adapters name the kinds they can run on, see ``FrameworkAdapter.job_kinds``)."""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    """The custom resource that runs the workers."""

    TRAINJOB = "trainjob"  # Kubeflow Trainer v2, runtime torch-distributed (torchrun)
    PYTORCHJOB = "pytorchjob"  # training-operator v1, for clusters not yet on Trainer v2
    TFJOB = "tfjob"  # training-operator v1; Trainer v2 has no TensorFlow runtime
