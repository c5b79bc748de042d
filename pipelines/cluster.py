"""`twinflow cluster up|down`: a local kind cluster with KFP, Kubeflow Trainer,
optionally KServe, and this project's manifests and images.

The plan is built as data (a list of commands) so that it can be printed
(`--dry-run`) and tested offline; running it needs docker, kind, kubectl and
internet access, none of which this project's CI machine has.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from components.errors import TwinflowError
from components.images import IMAGES
from components.settings import get_settings

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
CLUSTER = "twinflow"
KFP_VERSION = "2.17.0"
TRAINER_VERSION = "v2.3.0"
KSERVE_VERSION = "v0.16.0"
MLFLOW_URL = "http://127.0.0.1:30500"
KFP_PORT = 8080
_KFP = "github.com/kubeflow/pipelines/manifests/kustomize"
_TRAINER = "https://github.com/kubeflow/trainer.git/manifests/overlays"
_KSERVE = "https://github.com/kserve/kserve/releases/download"


@dataclass(frozen=True)
class Step:
    """One command of the plan and why it is there."""

    why: str
    argv: list[str]


def _image_builds() -> list[Step]:
    settings = get_settings()
    steps = []
    for kind, name in IMAGES.items():
        dockerfile = ROOT / "images" / name / "Dockerfile"
        if not dockerfile.is_file():
            continue
        ref = f"{settings.image_registry}/{name}:{settings.image_tag}"
        steps.append(Step(f"build the {kind} image", [
            "docker", "build", "-f", str(dockerfile.relative_to(ROOT)), "-t", ref, "."]))
        steps.append(Step(f"load {ref} into kind", [
            "kind", "load", "docker-image", ref, "--name", CLUSTER]))
    return steps


def up_plan(kserve: bool = False) -> list[Step]:
    """Everything `cluster up` runs, in order."""
    kubectl = ["kubectl", "--context", f"kind-{CLUSTER}"]
    plan = [Step("create the kind cluster (ports on 127.0.0.1 only)",
                 ["kind", "create", "cluster", "--name", CLUSTER, "--config",
                  "manifests/kind-cluster.yaml"]),
            *_image_builds(),
            Step(f"install KFP {KFP_VERSION} (standalone): cluster-scoped resources",
                 [*kubectl, "apply", "-k",
                  f"{_KFP}/cluster-scoped-resources?ref={KFP_VERSION}"]),
            Step("wait for KFP's CRDs", [*kubectl, "wait", "--for", "condition=established",
                                         "--timeout=120s", "crd/applications.app.k8s.io"]),
            Step("install KFP: the platform-agnostic environment",
                 [*kubectl, "apply", "-k", f"{_KFP}/env/platform-agnostic?ref={KFP_VERSION}"]),
            Step(f"install Kubeflow Trainer {TRAINER_VERSION}",
                 [*kubectl, "apply", "--server-side", "-k",
                  f"{_TRAINER}/manager?ref={TRAINER_VERSION}"]),
            Step("install the Trainer's training runtimes (torch-distributed)",
                 [*kubectl, "apply", "--server-side", "-k",
                  f"{_TRAINER}/runtimes?ref={TRAINER_VERSION}"])]
    if kserve:
        plan.append(Step(f"install KServe {KSERVE_VERSION}", [
            *kubectl, "apply", "--server-side", "-f",
            f"{_KSERVE}/{KSERVE_VERSION}/kserve.yaml"]))
    plan += [Step("generate credentials (kept out of git)", ["manifests/generate-secrets.sh"]),
             Step("install MLflow, its stores, RBAC and policies",
                  [*kubectl, "apply", "-k", "manifests/overlays/kind"]),
             Step("wait for MLflow", [*kubectl, "-n", "twinflow", "rollout", "status",
                                      "deployment/mlflow", "--timeout=300s"])]
    return plan


def down_plan() -> list[Step]:
    """Everything `cluster down` runs."""
    return [Step("delete the kind cluster", ["kind", "delete", "cluster", "--name", CLUSTER])]


def urls() -> dict[str, str]:
    """Where the UIs are once the cluster is up."""
    return {"MLflow": MLFLOW_URL,
            "KFP UI": f"http://127.0.0.1:{KFP_PORT} (after: kubectl --context kind-{CLUSTER} "
                      f"-n kubeflow port-forward --address 127.0.0.1 svc/ml-pipeline-ui "
                      f"{KFP_PORT}:80)"}


def missing_tools(plan: list[Step]) -> list[str]:
    """Executables the plan needs that are not on PATH."""
    needed = {step.argv[0] for step in plan if not step.argv[0].startswith("manifests/")}
    return sorted(tool for tool in needed if shutil.which(tool) is None)


def run(plan: list[Step]) -> None:
    """Execute the plan from the repository root, stopping at the first failure."""
    missing = missing_tools(plan)
    if missing:
        raise TwinflowError(f"cluster commands need {', '.join(missing)} on PATH (and internet "
                            "access for the KFP, Trainer and KServe manifests)")
    for step in plan:
        log.info("%s: %s", step.why, " ".join(step.argv))
        result = subprocess.run(step.argv, cwd=ROOT, check=False)
        if result.returncode != 0:
            raise TwinflowError(f"'{step.why}' failed (exit {result.returncode}): "
                                f"{' '.join(step.argv)}")
