"""Static checks of the Dockerfiles (no Docker engine runs here): every image
exists, builds in stages, runs as non-root, copies files that exist, carries OCI
labels, installs its framework from pyproject's pins, and the steps on the base
image never import a framework it lacks."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from components.images import IMAGES

REPO = Path(__file__).resolve().parents[1]
EXTRA = {"step-base": ".", "step-torch": ".[torch]", "step-tensorflow": ".[tensorflow]",
         "serving": ".[${FRAMEWORK}]"}


def _instructions(name: str) -> list[tuple[str, str]]:
    text = (REPO / "images" / name / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def _final_stage(name: str) -> list[tuple[str, str]]:
    steps = _instructions(name)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


@pytest.mark.parametrize("name", sorted(IMAGES.values()))
def test_image_is_multi_stage_non_root_and_labelled(name: str) -> None:
    steps = _instructions(name)
    assert sum(op == "FROM" for op, _ in steps) >= 2
    final = _final_stage(name)
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    labels = " ".join(arg for op, arg in final if op == "LABEL")
    for key in ("title", "description", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels


@pytest.mark.parametrize("name", sorted(IMAGES.values()))
def test_copied_files_exist_and_are_not_docker_ignored(name: str) -> None:
    ignored = {ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()}
    for op, arg in _instructions(name):
        if op != "COPY" or arg.startswith("--from="):
            continue
        *sources, _dest = arg.split()
        for source in sources:
            assert (REPO / source).exists(), f"{name}: COPY {source} does not exist"
            assert source.split("/")[0] not in ignored, f"{name}: {source} is .dockerignored"


@pytest.mark.parametrize("name", sorted(IMAGES.values()))
def test_image_installs_the_project_with_its_pins(name: str) -> None:
    runs = " ".join(arg for op, arg in _instructions(name) if op == "RUN")
    assert f'pip install "{EXTRA[name]}"' in runs or f"pip install {EXTRA[name]}" in runs
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "kfp==2.17.0" in project["dependencies"]  # what `install_kfp_package=False` relies on
    if name == "step-torch":
        torch_pin = project["optional-dependencies"]["torch"][0]
        assert f'pip install "{torch_pin}"' in runs


def test_base_image_steps_never_import_a_framework() -> None:
    base_modules = set()
    for component in (REPO / "components").glob("*/component.py"):
        text = component.read_text()
        if re.search(r'step_component\(\w+, "base"\)', text):
            base_modules |= set(re.findall(r"from (components\.[\w.]+) import", text))
    assert {"components.ingest.core", "components.transform.core"} <= base_modules
    code = ("import sys, importlib\n"
            f"for m in {sorted(base_modules)!r}: importlib.import_module(m)\n"
            "print(sorted(k for k in ('torch', 'tensorflow', 'keras', 'tf_keras') "
            "if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
