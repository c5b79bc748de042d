"""`twinflow images`: build the step and serving images; start or stop a local engine.

The work is in pipelines/image_build.py and pipelines/docker_engine.py; this module
only turns options into a call and the result (or a TwinflowError) into output.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

from components.errors import TwinflowError
from pipelines.image_base import SERVING_FRAMEWORKS, VARIANTS

images_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Build the step and serving images (images/); start or stop "
                              "a local Docker engine.")
engine_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="A dockerd that twinflow starts (as root) and stops.")
images_app.add_typer(engine_app, name="engine")


def _fail(err: TwinflowError) -> typer.Exit:
    typer.echo(f"twinflow: error: {err}", err=True)
    return typer.Exit(code=1)


def _show_progress() -> None:
    """The build's steps on stderr (the library logs them; nothing else prints them)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("pipelines.image_build", "pipelines.image_base"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@images_app.command("build")
def build(
    only: Annotated[list[str] | None, typer.Option(
        "--only", metavar="NAME",
        help="Build only this image (repeatable; `twinflow images list` names them).")] = None,
    offline: Annotated[bool | None, typer.Option(
        "--offline/--online", show_default="auto: offline when the Python base cannot be "
                                           "pulled",
        help="Offline: a Debian base bootstrapped here and torch from the host's pip; "
             "online: the pulled Python base and PyTorch's index.")] = None,
    variant: Annotated[str, typer.Option(
        help=f"One of {', '.join(VARIANTS)} (cuda: PyPI's CUDA torch, TensorFlow's CUDA "
             "libraries).")] = VARIANTS[0],
    serving_framework: Annotated[str, typer.Option(
        help=f"One of {', '.join(SERVING_FRAMEWORKS)}: TorchScript needs torch, SavedModel "
             "and TFLite need tensorflow, ONNX runs on either.")] = SERVING_FRAMEWORKS[0],
    source_url: Annotated[str, typer.Option(help="The OCI source label.")] = "",
    licenses: Annotated[str, typer.Option(help="The OCI licenses label.")] = "NOASSERTION",
    rebuild_base: Annotated[bool, typer.Option(
        help="Bootstrap the offline base again even if its inputs did not change.")] = False,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Run every build step again (layers are reused by default).")
    ] = False,
) -> None:
    """Build every image (or --only some), tagged as the compiled pipeline names them
    ($TWINFLOW_IMAGE_REGISTRY/NAME:$TWINFLOW_IMAGE_TAG); prints each one's size and
    digest. Needs a running Docker engine (twinflow images engine start)."""
    from pipelines.image_build import BuildOptions, build_images, human_size

    _show_progress()
    options = BuildOptions(only=tuple(only or ()), offline=offline, variant=variant,
                           serving_framework=serving_framework, source_url=source_url,
                           licenses=licenses, rebuild_base=rebuild_base, no_cache=no_cache)
    try:
        built = build_images(options)
    except TwinflowError as err:
        raise _fail(err) from None
    out = Console(soft_wrap=True)  # whole lines: the digests are for copying
    for item in built:
        out.print(f"{item.ref}  {human_size(item.size)}  {item.digest}  built in "
                  f"{item.seconds:.0f} s ({item.cached_steps}/{item.steps} steps cached)")


@images_app.command("list")
def list_images() -> None:
    """Each image the compiled pipeline names, with its size and digest; exits 1 naming
    the build command when one is not built."""
    from pipelines.image_build import human_size, local_images, not_built_message

    try:
        found = local_images()
    except TwinflowError as err:
        raise _fail(err) from None
    out = Console(soft_wrap=True)
    for item in found:
        out.print(f"{item.ref}  {human_size(item.size)}  {item.digest}" if item.digest
                  else f"{item.ref}  not built")
    missing = [item for item in found if not item.digest]
    if missing:
        raise _fail(TwinflowError(not_built_message(missing)))


@engine_app.command("start")
def engine_start() -> None:
    """Start dockerd (root only; --bridge=none --iptables=false --ip6tables=false, its
    log and pid under $TWINFLOW_HOME/docker) unless an engine already runs."""
    from pipelines.docker_engine import start_engine

    try:
        typer.echo(start_engine())
    except TwinflowError as err:
        raise _fail(err) from None


@engine_app.command("stop")
def engine_stop() -> None:
    """Stop the dockerd that `engine start` started (no other engine is touched)."""
    from pipelines.docker_engine import stop_engine

    typer.echo(stop_engine())


@engine_app.command("status")
def engine_status() -> None:
    """Whether an engine answers; exits 1 when none does."""
    from pipelines.docker_engine import engine_client

    try:
        client = engine_client(timeout=10)
    except TwinflowError as err:
        raise _fail(err) from None
    info = client.version()
    typer.echo(f"Docker {info.get('Version', '?')} is running "
               f"({len(client.images.list())} images)")
