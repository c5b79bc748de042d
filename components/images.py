"""Container images of the steps, named in one place.

The registry and tag come from ``TWINFLOW_IMAGE_REGISTRY`` / ``TWINFLOW_IMAGE_TAG``
when the pipeline is compiled, so a cluster can pull from its own registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kfp import dsl

from components.frameworks import framework_names, get_adapter
from components.settings import get_settings

# Image kind -> image name: the framework-free steps, one image per framework (its
# adapter's ``image``, named step-<kind> and built from images/step-<kind>/), serving.
IMAGES = {"base": "step-base",
          **{kind: f"step-{kind}" for kind in dict.fromkeys(
              get_adapter(name).image for name in framework_names())},
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


def framework_components(func: Callable[..., Any]) -> dict[str, Any]:
    """One component of ``func`` per registered framework, each on that framework's image."""
    return {name: step_component(func, get_adapter(name).image) for name in framework_names()}
