"""`twinflow cluster up|down`, offline: the commands it would run and the kind
config it uses. Running them needs docker, kind and internet access, which this
machine lacks; the end-to-end test below is skipped without them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.images import IMAGES
from pipelines.cluster import (
    KFP_VERSION,
    MLFLOW_URL,
    TRAINER_VERSION,
    down_plan,
    missing_tools,
    up_plan,
)

ROOT = Path(__file__).resolve().parents[1]


def _commands(kserve: bool = False) -> list[str]:
    return [" ".join(step.argv) for step in up_plan(kserve)]


def test_up_creates_loads_installs_in_order() -> None:
    commands = _commands()
    assert commands[0].startswith("kind create cluster --name twinflow --config ")
    first_apply = next(i for i, c in enumerate(commands) if " apply " in c)
    for name in IMAGES.values():
        if (ROOT / "images" / name / "Dockerfile").is_file():
            build = next(i for i, c in enumerate(commands)
                         if c.startswith("docker build") and f"/{name}:" in c)
            load = next(i for i, c in enumerate(commands)
                        if c.startswith("kind load") and f"/{name}:" in c)
            assert build < load < first_apply
    assert any(f"ref={KFP_VERSION}" in c for c in commands)
    assert any(f"ref={TRAINER_VERSION}" in c for c in commands)
    assert not any("kserve" in c for c in commands)
    assert any("kserve" in c for c in _commands(kserve=True))
    assert not any(ref in c for c in commands for ref in ("ref=master", ":latest"))
    assert commands[-2].endswith("apply -k manifests/overlays/kind")


def test_plan_only_names_files_that_exist() -> None:
    for step in up_plan(kserve=True):
        for arg in step.argv:
            if arg.startswith(("manifests/", "images/")):
                assert (ROOT / arg).exists(), f"{step.why}: {arg} is missing"


def test_kind_cluster_listens_on_loopback_only() -> None:
    config = yaml.safe_load((ROOT / "manifests" / "kind-cluster.yaml").read_text())
    assert config["networking"]["apiServerAddress"] == "127.0.0.1"
    mappings = [m for node in config["nodes"] for m in node.get("extraPortMappings", [])]
    assert mappings and all(m["listenAddress"] == "127.0.0.1" for m in mappings)
    assert any(m["hostPort"] == int(MLFLOW_URL.rsplit(":", 1)[1]) for m in mappings)


def test_down_deletes_the_cluster() -> None:
    assert [s.argv for s in down_plan()] == [["kind", "delete", "cluster", "--name", "twinflow"]]


def test_up_without_the_tools_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # nothing on PATH
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "cluster", "up"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("on PATH (and internet access for the KFP, Trainer "
                                          "and KServe manifests)")
    assert "docker, kind, kubectl" in result.stderr


@pytest.mark.e2e
def test_cluster_up_for_real() -> None:
    if missing_tools(up_plan()) or os.environ.get("TWINFLOW_E2E_CLUSTER") != "1":
        pytest.skip("needs docker, kind, kubectl, internet and TWINFLOW_E2E_CLUSTER=1")
    subprocess.run([sys.executable, "-m", "pipelines.cli", "cluster", "up"], cwd=ROOT,
                   check=True, timeout=3600)
    try:
        import requests

        assert requests.get(f"{MLFLOW_URL}/health", timeout=10).ok
    finally:
        subprocess.run([sys.executable, "-m", "pipelines.cli", "cluster", "down"], cwd=ROOT,
                       check=False, timeout=600)


def test_dry_run_prints_commands() -> None:
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "cluster", "down",
                             "--dry-run"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["# delete the kind cluster",
                                          "kind delete cluster --name twinflow"]
