"""Issue 15 figures: each image's cold and warm build time and its size.

Cold, as on a fresh machine: offline, the base is bootstrapped again (``--cold``),
which gives it a new image id, so no layer of an earlier build can be reused; then
every image is built in the order of components/images.py, as `twinflow images
build` does, so the later images reuse the dependency layer the first one built
(pip downloads everything: the images keep no pip cache). Nothing is deleted, so
nothing another user of the engine relies on disappears. Warm: the same builds right
after, inputs unchanged (every layer reused). Online there is no base to renew:
``--cold`` then builds each image with ``--no-cache`` (no sharing, an upper bound).

Usage: .venv/bin/python bench/bench_images.py [--cold] [--only NAME ...]
Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import time

from components.images import IMAGES
from components.settings import get_settings
from pipelines.docker_engine import engine_client
from pipelines.image_base import ensure_base
from pipelines.image_build import BuildOptions, BuiltImage, build_images, human_size, is_offline


def build(name: str, no_cache: bool = False) -> BuiltImage:
    return build_images(BuildOptions(only=(name,), no_cache=no_cache))[0]


def renew_base() -> float:
    """Seconds to bootstrap and import the offline base again (a new image id)."""
    start = time.monotonic()
    ensure_base(engine_client(), (get_settings().home / "logs" / "images").resolve(),
                rebuild=True)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=list(IMAGES.values()))
    parser.add_argument("--cold", action="store_true", help="cold builds first (minutes)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    offline = is_offline(engine_client())
    print(f"offline: {offline}")
    if args.cold and offline:
        print(f"offline base (mmdebstrap + docker import): {renew_base():.0f} s", flush=True)
    cold = {name: build(name, no_cache=not offline) for name in args.only} if args.cold else {}
    warm = {name: build(name) for name in args.only}
    print("\n| image | cold build s | warm build s | steps cached (warm) | size |")
    print("|---|---|---|---|---|")
    for name, image in warm.items():
        first = f"{cold[name].seconds:.0f}" if name in cold else "n/a"
        print(f"| {name} | {first} | {image.seconds:.1f} | {image.cached_steps}/{image.steps} "
              f"| {human_size(image.size)} |")
    print(f"| all | {sum(c.seconds for c in cold.values()):.0f} | "
          f"{sum(w.seconds for w in warm.values()):.1f} | | |")


if __name__ == "__main__":
    main()
