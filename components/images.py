"""Container images of the steps, named in one place.

The registry and tag come from ``TWINFLOW_IMAGE_REGISTRY`` / ``TWINFLOW_IMAGE_TAG``
when the pipeline is compiled, so a cluster can pull from its own registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kfp import dsl

from components.settings import get_settings

IMAGES = {"base": "step-base", "torch": "step-torch", "tensorflow": "step-tensorflow",
          "serving": "serving"}


def image(kind: str) -> str:
    """Fully qualified image reference of ``kind`` (base, torch, tensorflow, serving)."""
    settings = get_settings()
    return f"{settings.image_registry}/{IMAGES[kind]}:{settings.image_tag}"


def step_component(func: Callable[..., Any], kind: str) -> Any:
    """A lightweight KFP component of ``func`` on image ``kind``.

    ``install_kfp_package=False``: the images bake kfp and twinflow in, so a step
    starts without a pip install.
    """
    return dsl.component(func, base_image=image(kind), install_kfp_package=False)
