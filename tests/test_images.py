"""Static checks of the Dockerfiles under images/ (no Docker engine runs here):
one per image of components/images.py, multi-stage, non-root, OCI-labelled,
COPYing files that exist, and installing what the steps on them import with the
pins of pyproject.toml."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from components.frameworks import framework_names, get_adapter
from components.images import IMAGES

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([\w.*+-]+)")
NAMES = sorted(IMAGES.values())


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of images/<name>/Dockerfile, continuations joined."""
    text = re.sub(r"\\\n", " ", (REPO / "images" / name / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines()]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1])
            for ln in lines if ln and not ln.startswith("#")]


def final_stage(name: str) -> list[tuple[str, str]]:
    steps = instructions(name)
    return steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]


def runs(name: str) -> str:
    return "\n".join(arg for op, arg in instructions(name) if op == "RUN")


def pyproject_pins() -> dict[str, str]:
    extras = PROJECT["optional-dependencies"].values()
    reqs = [*PROJECT["dependencies"], *(req for extra in extras for req in extra)]
    return {m[1].lower(): m[2] for r in reqs if (m := PIN.fullmatch(r.replace(" ", "")))}


def test_every_image_has_a_dockerfile_and_no_other() -> None:
    assert {p.parent.name for p in (REPO / "images").glob("*/Dockerfile")} == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_multi_stage_non_root_and_labelled(name: str) -> None:
    assert sum(op == "FROM" for op, _ in instructions(name)) >= 2
    final = final_stage(name)
    users = [arg for op, arg in final if op == "USER"]
    # uid 1000 numerically: the Kubernetes manifests run the steps as uid 1000.
    assert users and users[-1].split(":")[0] == "1000", f"{name}: final USER {users}"
    labels = " ".join(arg for op, arg in final if op == "LABEL")
    for key in ("title", "description", "source", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, f"{name}: no {key} label"
    assert ("ARG", f"TWINFLOW_VERSION={PROJECT['version']}") in final


@pytest.mark.parametrize("name", NAMES)
def test_copied_files_exist_and_are_not_docker_ignored(name: str) -> None:
    ignored = {ln.strip().rstrip("/") for ln in (REPO / ".dockerignore").read_text().splitlines()}
    copies = [arg.split() for op, arg in instructions(name)
              if op in ("COPY", "ADD") and not arg.startswith("--from=")]
    assert copies, f"{name}: copies nothing from the build context"
    for *sources, _dest in copies:
        for source in (s for s in sources if not s.startswith("--")):
            assert (REPO / source).exists(), f"{name}: COPY {source} does not exist"
            assert source.split("/")[0] not in ignored, f"{name}: {source} is .dockerignored"


@pytest.mark.parametrize("name", NAMES)
def test_run_commands_are_valid_sh(name: str) -> None:
    for command in runs(name).splitlines():
        result = subprocess.run(["sh", "-n", "-c", command], capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: RUN {command}\n{result.stderr}"


def project_installs(name: str) -> list[tuple[int, str, str]]:
    """(instruction index, pip options, target) of each `pip install` of the project."""
    install = re.compile(r'pip install ((?:--[\w-]+ )*)("?\.(?:\[[^\]]*\])?"?)(?=[\s;]|$)')
    return [(i, *m) for i, (op, arg) in enumerate(instructions(name)) if op == "RUN"
            for m in install.findall(arg)]


def test_each_image_installs_the_extra_its_steps_import() -> None:
    kinds = set()
    for module in (REPO / "components").glob("*/component.py"):
        text = module.read_text()
        kinds |= set(re.findall(r'step_component\(\w+, "(\w+)"\)', text))
        if "framework_components(" in text:  # one component per framework, on its image
            kinds |= {get_adapter(name).image for name in framework_names()}
    assert kinds == {"base", "torch", "tensorflow"}
    expected = {IMAGES[kind]: f'".[{kind}]"' if kind in PROJECT["optional-dependencies"] else "."
                for kind in kinds} | {"serving": '".[${FRAMEWORK}]"'}
    for name, target in expected.items():
        # Every install with dependencies (each VARIANT's) takes the image's extra.
        targets = {t for _, opts, t in project_installs(name) if "--no-deps" not in opts}
        assert targets == {target}, f"{name}: installs {targets}, not {target}"


@pytest.mark.parametrize("name", NAMES)
def test_project_is_installed_after_its_code_is_copied(name: str) -> None:
    steps = instructions(name)
    copies = [i for i, (op, arg) in enumerate(steps) if op == "COPY" and "--from=" not in arg]
    assert max(i for i, _, _ in project_installs(name)) > max(copies)


@pytest.mark.parametrize("name", NAMES)
def test_pins_agree_with_pyproject(name: str) -> None:
    pins, text = pyproject_pins(), runs(name)
    assert "kfp" in pins, "pyproject must pin kfp: the steps use install_kfp_package=False"
    for package, version in PIN.findall(text):
        if package.lower() in pins:
            assert version == pins[package.lower()], f"{name}: {package}=={version}"
    if "torch==" in text:  # torch first, then the project: else pip takes a CUDA torch
        assert text.index("torch==") < text.index("pip install \".[")


def test_torch_images_pin_torch_from_the_cpu_index() -> None:
    torch_pin = f"torch=={pyproject_pins()['torch']}"
    for name in ("step-torch", "serving"):
        assert f'pip install "{torch_pin}" --index-url "$TORCH_CPU_INDEX"' in runs(name)
        assert ("ARG", "TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu") in instructions(name)


def test_serving_installs_kserve_and_onnxruntime_and_runs_the_kserve_server() -> None:
    assert '"kserve==0.21.0"' in runs("serving")
    assert '"onnxruntime==' in runs("serving")
    entrypoint = [arg for op, arg in final_stage("serving") if op == "ENTRYPOINT"]
    assert entrypoint and json.loads(entrypoint[-1]) == ["python", "-m", "components.serve"]
    assert (REPO / "components" / "serve" / "__main__.py").is_file()
    env = " ".join(arg for op, arg in final_stage("serving") if op == "ENV")
    # The KServe storage initializer's mount, and the pod address (not only loopback).
    assert "MODEL_DIR=/mnt/models" in env and "HOST=0.0.0.0" in env


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
