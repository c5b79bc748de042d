"""Ship a ``module:function`` builder's code with the run, as a file's source is shipped.

On the user's machine (``pipelines.params.with_model_code``) the builder's top-level
package is found with ``importlib.util.find_spec`` (nothing is imported) and its
``.py`` files are zipped, deterministically, into the run's ``model_code``, so every
step and every cluster pod imports exactly the code the run started with, and the
content digest is tagged like a file's. A step unpacks it into a cache folder named
by the digest, ahead of everything else on ``sys.path``.

Not shipped: a package installed in site-packages (a library the step image is
expected to have, like any other dependency), or one this machine cannot find (it
may exist only in the step image; the step then imports it as it is, or fails
naming the module).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import logging
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from components.errors import ConfigError

log = logging.getLogger(__name__)
PACKAGE_PREFIX = "zip:"  # model_code of a shipped package: this prefix + base64 of the zip
MAX_BYTES = 1 << 20  # a pipeline parameter, not a data channel: keep it small
_INSTALLED = ("site-packages", "dist-packages")
_CACHE = Path(tempfile.gettempdir()) / "twinflow-model-code"
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # zip entries without mtimes: same code, same digest
_shipped: set[str] = set()  # top-level packages imported from a shipped zip


def top_level(name: str) -> str:
    """``mypkg`` of ``mypkg.nets:build``."""
    return name.partition(":")[0].split(".")[0]


def pack(name: str) -> str:
    """The ``model_code`` of ``module:function`` ``name``: '' when not shipped (see the
    module docstring); ConfigError when the package is larger than ``MAX_BYTES``."""
    top = top_level(name)
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return ""
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin in (None, "built-in", "frozen"):
        return ""
    root = Path(locations[0] if locations else str(spec.origin))
    if any(part in _INSTALLED for part in root.parts):
        return ""
    data = _zip(root, top, package=bool(locations))
    if len(data) > MAX_BYTES:
        raise ConfigError(f"--model {name}: package {top} ({root}) is {len(data):,} bytes "
                          f"zipped, over {MAX_BYTES:,}; install it in the step image instead")
    log.info("shipping %s (%s, %d bytes zipped) with the run", top, root, len(data))
    return PACKAGE_PREFIX + base64.b64encode(data).decode("ascii")


def _zip(root: Path, top: str, package: bool) -> bytes:
    files = (sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
             if package else [root])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            arcname = f"{top}/{path.relative_to(root).as_posix()}" if package else f"{top}.py"
            info = zipfile.ZipInfo(arcname, date_time=_FIXED_TIME)
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def is_package(source: str) -> bool:
    """``model_code`` holds a shipped package (not a file's source)."""
    return source.startswith(PACKAGE_PREFIX)


def archive_bytes(source: str) -> bytes:
    """The zip of a shipped package (logged as the train run's model_code artifact)."""
    return base64.b64decode(source.removeprefix(PACKAGE_PREFIX))


def install(name: str, source: str, digest: str) -> None:
    """Unpack a shipped package into the digest's cache folder (once, atomically: DDP
    workers may race) and put that folder first on ``sys.path``."""
    top = top_level(name)
    target = _CACHE / f"pkg-{digest[:16]}"
    if not (target / ".complete").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        with zipfile.ZipFile(io.BytesIO(archive_bytes(source))) as archive:
            archive.extractall(staging)
        (staging / ".complete").write_text(digest, encoding="utf-8")
        try:
            staging.rename(target)
        except OSError:  # another process got there first
            shutil.rmtree(staging, ignore_errors=True)
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    loaded = sys.modules.get(top)
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(str(target)):
        log.warning("model %s: %s was already imported from %s; the shipped copy is not "
                    "used in this process", name, top, getattr(loaded, "__file__", "?"))
    _shipped.add(top)


def shipped_modules() -> list[str]:
    """Names in ``sys.modules`` that belong to a package imported from a shipped zip."""
    return [m for m in sys.modules
            if any(m == top or m.startswith(f"{top}.") for top in _shipped)]
