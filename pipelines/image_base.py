"""The inputs a build takes from this machine when no registry can be pulled from.

Offline, the Dockerfiles' ``PYTHON_IMAGE`` is a Debian bookworm base bootstrapped
from Debian's packages (``mmdebstrap``, then ``docker import``) that trusts the
host's local CA certificates (the package registries' TLS is signed by one), and
the CPU build of torch comes from the host's pip (inside an image, pip's torch is
the multi-GB CUDA build). Online, neither is needed: see pipelines/image_build.py.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Final

from components.errors import TwinflowError
from components.frameworks import framework_names

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

REPO: Final = Path(__file__).resolve().parents[1]
#: The bootstrapped base; ``localhost/`` because it is never pushed anywhere.
BASE_REPOSITORY: Final = "localhost/twinflow-python"
BASE_TAG: Final = "bookworm"
BASE_SUITE: Final = "bookworm"  # Debian 12: Python 3.11, as pyproject requires
DEBIAN_MIRROR: Final = "http://deb.debian.org/debian"
#: python3-venv brings pip (ensurepip); passwd brings useradd for the images' user.
BASE_PACKAGES: Final = ("python3", "python3-venv", "ca-certificates", "passwd")
HOST_CA_DIR: Final = Path("/usr/local/share/ca-certificates")
INPUTS_LABEL: Final = "org.twinflow.base.inputs"
#: Where the host's wheels go: a folder of the build context the Dockerfiles COPY.
WHEELS_DIR: Final = REPO / "images" / "wheels"
#: The build's choices (`twinflow images build --variant / --serving-framework`).
VARIANTS: Final = ("cpu", "cuda")
SERVING_FRAMEWORKS: Final = tuple(framework_names())


class ImageBuildError(TwinflowError):
    """An image cannot be built here; the message says what to do."""


class MissingToolError(ImageBuildError):
    """A tool the build needs on this machine is not installed."""


def base_image() -> str:
    """The bootstrapped base's reference."""
    return f"{BASE_REPOSITORY}:{BASE_TAG}"


def host_cas() -> list[Path]:
    """The host's local CA certificates (update-ca-certificates' own folder)."""
    return sorted(HOST_CA_DIR.glob("**/*.crt")) if HOST_CA_DIR.is_dir() else []


def base_inputs() -> str:
    """A digest of everything the base is made of: a changed CA rebuilds it."""
    digest = hashlib.sha256(f"{BASE_SUITE} {DEBIAN_MIRROR} {BASE_PACKAGES}".encode())
    for ca in host_cas():
        digest.update(ca.name.encode() + ca.read_bytes())
    return digest.hexdigest()[:16]


def ensure_base(client: docker.DockerClient, log_dir: Path, rebuild: bool = False) -> str:
    """The bootstrapped base, made now unless one of the same inputs exists."""
    import docker.errors

    want = base_inputs()
    try:
        found = client.images.get(base_image()).labels.get(INPUTS_LABEL)
    except docker.errors.ImageNotFound:
        found = None
    if found == want and not rebuild:
        log.info("base %s is up to date (inputs %s)", base_image(), want)
        return base_image()
    if shutil.which("mmdebstrap") is None:
        raise MissingToolError(
            "building offline needs a base image and mmdebstrap is not installed: "
            "apt-get install -y mmdebstrap (./setup.sh does it as root), or build --online "
            "where the Dockerfiles' Python base can be pulled")
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="twinflow-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        _bootstrap(rootfs, log_dir / "base.log")
        client.api.import_image_from_file(
            str(rootfs), repository=BASE_REPOSITORY, tag=BASE_TAG,
            changes=[f"LABEL {INPUTS_LABEL}={want}", "ENV LANG=C.UTF-8", 'CMD ["python3"]'])
    log.info("base %s bootstrapped from Debian %s (inputs %s)", base_image(), BASE_SUITE, want)
    return base_image()


def _bootstrap(rootfs: Path, log_file: Path) -> None:
    """mmdebstrap a minimal bookworm with python3 into ``rootfs``, trusting the host CAs."""
    cas = host_cas()
    hooks = []
    if cas:
        target = "/usr/local/share/ca-certificates/"
        hooks = [f'mkdir -p "$1{target}"',
                 f"copy-in {' '.join(shlex.quote(str(c)) for c in cas)} {target}",
                 'chroot "$1" update-ca-certificates']
    argv = ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            *(f"--customize-hook={hook}" for hook in hooks), BASE_SUITE, str(rootfs),
            DEBIAN_MIRROR]
    log.info("bootstrapping the base: %s (log %s)", shlex.join(argv), log_file)
    with open(log_file, "wb") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise ImageBuildError(f"mmdebstrap of the base failed ({done.returncode}): "
                              f"{_last_line(log_file)} (log {log_file})")


def _last_line(log_file: Path) -> str:
    lines = log_file.read_text(errors="replace").strip().splitlines()
    return lines[-1][:300] if lines else "no output"


def torch_pin() -> str:
    """torch's version in pyproject's ``torch`` extra (the one pin of it)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for req in project["optional-dependencies"]["torch"]:
        if match := re.fullmatch(r"torch==([\w.]+)", req.replace(" ", "")):
            return match[1]
    raise ImageBuildError("pyproject.toml's torch extra does not pin torch==VERSION")


def ensure_torch_wheel() -> Path:
    """The CPU torch wheel in images/wheels/, downloaded by the host's pip if missing."""
    version = torch_pin()
    pattern = f"torch-{version}+cpu-*.whl"
    found = sorted(WHEELS_DIR.glob(pattern))
    if found:
        return found[0]
    argv = [sys.executable, "-m", "pip", "download", f"torch=={version}", "--no-deps",
            "--only-binary", ":all:", "--quiet", "-d", str(WHEELS_DIR)]
    log.info("downloading torch %s with the host's pip into %s", version, WHEELS_DIR)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    found = sorted(WHEELS_DIR.glob(pattern))
    if found:
        return found[0]
    for other in WHEELS_DIR.glob(f"torch-{version}*.whl"):  # a CUDA build: GBs, useless
        other.unlink()
    detail = (done.stderr.strip().splitlines() or ["it resolved a non-CPU build"])[-1]
    raise ImageBuildError(
        f"the host's pip gave no CPU wheel of torch {version} ({detail}): put "
        f"{pattern} into {WHEELS_DIR}, or build --online (PyTorch's CPU index)")
