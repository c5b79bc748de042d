"""`twinflow images build`: every image of images/, tagged as the pipeline names them.

One set of Dockerfiles serves two kinds of machine through build arguments:

- online (a registry can be pulled from): ``FROM`` the pulled Python base that the
  Dockerfiles default to, torch from PyTorch's CPU (or, ``--variant cuda``, PyPI's
  CUDA) index;
- offline (this project's machines: package registries only): ``FROM`` a Debian base
  bootstrapped here, torch's CPU wheel from the host's pip in the build context
  (pipelines/image_base.py).

Both build with host networking (there is no bridge network here). The builds go
through the engine's API (the docker SDK, as kfp's DockerRunner does), so no docker
CLI, buildx or BuildKit frontend image is needed; the engine's layer cache makes a
rebuild with unchanged inputs take seconds (each Dockerfile installs its
dependencies before it copies the code).
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from components.frameworks import framework_names, get_adapter
from components.images import IMAGES, image
from components.settings import get_settings
from pipelines.docker_engine import engine_client
from pipelines.image_base import (
    REPO,
    SERVING_FRAMEWORKS,
    VARIANTS,
    ImageBuildError,
    ensure_base,
    ensure_torch_wheel,
)

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

WHEELS_CONTEXT: Final = "images/wheels"  # the context folder the torch Dockerfiles COPY


@dataclass(frozen=True)
class BuildOptions:
    """What to build and how; the defaults build every image for this machine."""

    only: tuple[str, ...] = ()  # image names (components.images.IMAGES); empty: all
    offline: bool | None = None  # None: offline when the Python base cannot be pulled
    variant: str = "cpu"
    serving_framework: str = "torch"
    source_url: str = ""
    licenses: str = "NOASSERTION"
    rebuild_base: bool = False
    no_cache: bool = False  # every step again (a cold build's time, without deleting images)


@dataclass(frozen=True)
class BuiltImage:
    """One image as the engine has it after its build."""

    name: str
    ref: str
    seconds: float
    size: int  # bytes, as `docker images` reports
    digest: str  # the image id: the digest of its configuration
    cached_steps: int
    steps: int  # steps that can come from the cache (all but FROM)


def dockerfile(name: str) -> Path:
    return REPO / "images" / name / "Dockerfile"


def pulled_base() -> str:
    """The Dockerfiles' default ``PYTHON_IMAGE`` (the one place it is written)."""
    text = dockerfile(IMAGES["base"]).read_text()
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, flags=re.MULTILINE)
    if match is None:
        raise ImageBuildError(f"{dockerfile(IMAGES['base'])} declares no ARG PYTHON_IMAGE=...")
    return match[1]


def select(only: Iterable[str]) -> list[str]:
    """The image kinds to build, in the order of IMAGES; unknown names fail."""
    names = {name: kind for kind, name in IMAGES.items()}
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ImageBuildError(f"unknown image(s) {', '.join(unknown)}; choose from: "
                              f"{', '.join(IMAGES.values())}")
    wanted = set(only) or set(names)
    return [kind for kind, name in IMAGES.items() if name in wanted]


def build_images(options: BuildOptions) -> list[BuiltImage]:
    """Build the selected images (see the module docstring); each one as it ends."""
    if options.variant not in VARIANTS:
        raise ImageBuildError(f"--variant {options.variant!r}: choose {' or '.join(VARIANTS)}")
    if options.serving_framework not in SERVING_FRAMEWORKS:
        raise ImageBuildError(f"--serving-framework {options.serving_framework!r}: choose "
                              f"{' or '.join(SERVING_FRAMEWORKS)}")
    kinds = select(options.only)
    client = engine_client()
    log_dir = (get_settings().home / "logs" / "images").resolve()
    offline = is_offline(client) if options.offline is None else options.offline
    args = _common_args(options)
    if offline:
        args["PYTHON_IMAGE"] = ensure_base(client, log_dir, options.rebuild_base)
        if _needs_cpu_torch(kinds, options):
            ensure_torch_wheel()
            args["TORCH_SOURCE"] = "wheels"
    return [_build(client, kind, args, log_dir, options.no_cache) for kind in kinds]


def _needs_cpu_torch(kinds: list[str], options: BuildOptions) -> bool:
    """Whether an image to build takes torch's CPU build (serving always does)."""
    step = any(get_adapter(f).cpu_wheel and get_adapter(f).image in kinds
               for f in framework_names())
    serving = "serving" in kinds and bool(get_adapter(options.serving_framework).cpu_wheel)
    return (step and options.variant == "cpu") or serving


def _common_args(options: BuildOptions) -> dict[str, str]:
    """Build arguments of every image (an image ignores those it does not declare)."""
    return {"PYTHON_IMAGE": pulled_base(), "TORCH_SOURCE": "index",
            "VARIANT": options.variant, "FRAMEWORK": options.serving_framework,
            "TWINFLOW_VERSION": version("twinflow"), "SOURCE_URL": options.source_url,
            "LICENSES": options.licenses, "REVISION": _revision()}


def _revision() -> str:
    """The checkout's commit (the OCI revision label), or empty outside git."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    return ""


def is_offline(client: docker.DockerClient) -> bool:
    """Offline unless the pulled Python base is here or can be pulled now."""
    import docker.errors

    base = pulled_base()
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(base)
        return False
    try:
        client.images.pull(base)
    except docker.errors.APIError as err:
        log.info("%s cannot be pulled (%s): building offline on a bootstrapped base",
                 base, str(err).split(":")[-1].strip()[:120])
        return True
    return False


def _build(client: docker.DockerClient, kind: str, args: dict[str, str], log_dir: Path,
           no_cache: bool = False) -> BuiltImage:
    """Build one image, its output streamed to a log file; the result as the engine has it."""
    name, ref = IMAGES[kind], image(kind)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{name}.log"
    start = time.monotonic()
    log.info("building %s (log %s)", ref, log_file)
    with _context(name) as context, open(log_file, "w") as out:
        stream = client.api.build(fileobj=context, custom_context=True, tag=ref,
                                  dockerfile=f"images/{name}/Dockerfile", buildargs=args,
                                  network_mode="host", rm=True, forcerm=True, decode=True,
                                  nocache=no_cache)
        steps, cached = _follow(stream, out, name, log_file)
    built = client.images.get(ref)
    result = BuiltImage(name=name, ref=ref, seconds=time.monotonic() - start,
                        size=int(built.attrs["Size"]), digest=str(built.id),
                        cached_steps=cached, steps=steps)
    log.info("built %s in %.0f s (%d of %d steps cached)", ref, result.seconds, cached, steps)
    return result


@contextlib.contextmanager
def _context(name: str) -> Iterator[IO[bytes]]:
    """The build context: the repository minus .dockerignore, and minus the host's
    wheels for an image that does not COPY them (they are 200 MB of torch)."""
    from docker.utils.build import tar

    ignore = REPO / ".dockerignore"
    exclude = [ln.strip() for ln in ignore.read_text().splitlines()
               if ln.strip() and not ln.startswith("#")] if ignore.is_file() else []
    if WHEELS_CONTEXT not in dockerfile(name).read_text():
        exclude.append(f"{WHEELS_CONTEXT}/*.whl")
    with tempfile.TemporaryFile() as fileobj:
        tar(str(REPO), exclude=exclude, dockerfile=(f"images/{name}/Dockerfile", None),
            fileobj=fileobj)
        fileobj.seek(0)
        yield fileobj


def _follow(stream: Iterator[dict[str, Any]], out: IO[str], name: str,
            log_file: Path) -> tuple[int, int]:
    """Copy the engine's build output to ``out``; (steps, cached steps); the error as
    one line naming the step that failed and the log."""
    steps = cached = 0
    step, in_stage = "", False
    start = time.monotonic()
    for chunk in stream:
        text = str(chunk.get("stream", ""))
        if text.startswith("Step "):  # elapsed seconds: where a slow build spends its time
            step = text.strip()
            # Only a step in a stage can be cached (not FROM, not an ARG before the first).
            in_stage = in_stage or " : FROM " in step
            steps += in_stage and " : FROM " not in step
            out.write(f"[{time.monotonic() - start:7.1f} s] ")
            log.info("%s: %s", name, step[:160])
        out.write(text)
        cached += " ---> Using cache" in text
        if "error" in chunk:
            out.write(f"\nERROR: {chunk['error']}\n")
            out.flush()
            detail = str(chunk["error"]).strip().splitlines()[-1][:300]
            raise ImageBuildError(f"{name}: the build failed at {step or 'its start'!r}: "
                                  f"{detail} (full log {log_file})")
    return steps, cached


@dataclass(frozen=True)
class LocalImage:
    """An image of components/images.py as the engine has it (``digest`` empty: not built)."""

    name: str
    ref: str
    size: int = 0
    digest: str = ""


def local_images() -> list[LocalImage]:
    """Each image the compiled pipeline names, built or not (in the order of IMAGES)."""
    import docker.errors

    client = engine_client(timeout=30)
    found = []
    for kind, name in IMAGES.items():
        try:
            built = client.images.get(image(kind))
            found.append(LocalImage(name, image(kind), int(built.attrs["Size"]), str(built.id)))
        except docker.errors.ImageNotFound:
            found.append(LocalImage(name, image(kind)))
    return found


def not_built_message(missing: list[LocalImage]) -> str:
    """The one line naming images that are not built and the command that builds them."""
    only = " ".join(f"--only {m.name}" for m in missing)
    return (f"not built: {', '.join(m.ref for m in missing)}; run `twinflow images build "
            f"{only}`")


def human_size(size: int) -> str:
    """``size`` bytes as `docker images` shows them (decimal units)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1000
    return f"{value:.2f} GB"
