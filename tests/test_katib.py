"""The Katib Experiment of a search space, and the Katib trial, checked offline.

There is no Katib CRD in ../shared/crds (Katib's CRD carries no schema anyway) and no
cluster here, so nothing is applied and no Katib controller, webhook, suggestion or
metrics-collector sidecar runs. What is checked instead:

- the Experiment is built from, and round-trips through, the ``kubeflow-katib-api``
  pydantic models and YAML without losing a field, and passes the rules of Katib's
  validating webhook that need no cluster (re-stated below from
  ``pkg/webhook/v1beta1/experiment/validator/validator.go``);
- the trial's batch/v1 Job validates against the real Kubernetes schema
  (kubernetes-validate, strict: no unknown fields), as tests/test_manifests.py does;
- a real trial: the Job's command, with its trial parameters substituted and wrapped
  the way Katib's pod webhook wraps a StdOut-collected container (``sh -c`` ... ``1>file
  2>&1 && echo completed``), run with the real shell on real transformed digits; its
  metrics file parsed with Katib's own default StdOut filter matches the per-epoch
  values logged to MLflow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import pytest
from kubeflow_katib_api.models import (
    IoK8sApiCoreV1PodTemplateSpec,
    V1beta1Experiment,
    V1beta1ExperimentStatus,
)
from mlflow.tracking import MlflowClient

from components.config import Framework, TrainConfig
from components.errors import ConfigError, DataError
from components.tags import PIPELINE_ROOT_TAG, TUNE_STATE_TAG, TUNE_TRIAL_TAG
from components.tune.katib_trial import MODULE, format_metric, parse_params, resolve_data
from components.tune.space import SearchSpace, parse_space
from pipelines.katib import (
    CONTAINER,
    TRIAL_NAME,
    best_params,
    katib_experiment,
    katib_name,
    katib_names,
    read_experiment,
    twinflow_name,
    write_experiment,
)

# Katib's default StdOut/File metrics filter, copied from Katib v0.19's
# pkg/metricscollector/v1beta1/common/const.go (`DefaultFilter`); Go's RE2 classes are
# ASCII, hence re.ASCII.
KATIB_DEFAULT_FILTER = r"([\w|-]+)\s*=\s*((-?\d+)(\.\d+)?)"
KATIB_FILTER = re.compile(KATIB_DEFAULT_FILTER, re.ASCII)
# pkg/controller.v1beta1/consts/const.go: TrialTemplateParamReplaceFormat(Regex).
PARAM_PLACEHOLDER = "${{trialParameters.{}}}"
PARAM_PLACEHOLDER_RE = re.compile(r"\$\{trialParameters\..+?\}")
K8S_VERSION = "1.35.0"
SPACE = {"params": {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
    "batch_size": {"type": "int", "low": 16, "high": 64},
    "model_options.width": {"type": "int", "low": 8, "high": 32, "log": True},
    "model_options.dropout": {"type": "categorical", "choices": [0.0, 0.2]},
    "precision": {"type": "categorical", "choices": ["fp32", "bf16"]}},
    "trials": 6, "seed": 7}
BASE = TrainConfig(framework=Framework.TORCH, epochs=2, model_ref="mlp", show_progress=False)


def _space(**changes: Any) -> SearchSpace:
    return parse_space({**SPACE, **changes}, "search.yaml")


def _experiment(space: SearchSpace | None = None, parallel: int = 3, **kw: Any
                ) -> V1beta1Experiment:
    return katib_experiment(space or _space(), kw.pop("base", BASE), "/data/digits",
                            "digits-torch", "twinflow", parallel, "http://mlflow:5000",
                            task=kw.pop("task", "multiclass"), **kw)


def _webhook_errors(exp: dict[str, Any]) -> list[str]:
    """The checks of Katib's ValidateExperiment that need no cluster (validator.go)."""
    spec, errors = exp["spec"], []
    if not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?", exp["metadata"]["name"]):
        errors.append("metadata.name")
    if spec["maxFailedTrialCount"] > spec["maxTrialCount"]:
        errors.append("maxFailedTrialCount > maxTrialCount")
    if spec["parallelTrialCount"] > spec["maxTrialCount"]:
        errors.append("parallelTrialCount > maxTrialCount")
    objective = spec["objective"]
    if objective["type"] not in ("minimize", "maximize") or not objective["objectiveMetricName"]:
        errors.append("objective")
    if objective["objectiveMetricName"] in objective.get("additionalMetricNames", []):
        errors.append("additionalMetricNames has the objective")
    for p in spec["parameters"]:
        space = p["feasibleSpace"]
        if p["parameterType"] in ("int", "double") and ("list" in space or "max" not in space):
            errors.append(f"parameter {p['name']}")
        if p["parameterType"] == "categorical" and ({"min", "max", "step"} & set(space)):
            errors.append(f"parameter {p['name']}")
        if space.get("distribution", "uniform") not in ("uniform", "logUniform", "normal",
                                                        "logNormal"):
            errors.append(f"distribution of {p['name']}")
    template = spec["trialTemplate"]
    if not template.get("primaryContainerName") or not template.get("successCondition") \
            or not template.get("failureCondition"):
        errors.append("trialTemplate conditions / primaryContainerName")
    text = json.dumps(template["trialSpec"])
    names = {p["name"] for p in spec["parameters"]}
    for tp in template["trialParameters"]:
        meta = tp["reference"].startswith("${trialSpec.")
        if not meta and tp["reference"] not in names:
            errors.append(f"trialParameter {tp['name']}: reference not in parameters")
        if PARAM_PLACEHOLDER.format(tp["name"]) not in text:
            errors.append(f"trialParameter {tp['name']}: not in the trial template")
        text = text.replace(PARAM_PLACEHOLDER.format(tp["name"]), "test-value")
    errors += [f"unreplaced {p}" for p in PARAM_PLACEHOLDER_RE.findall(text)]
    job = template["trialSpec"]
    if job["metadata"].get("name") or job["metadata"].get("namespace"):
        errors.append("trialSpec has metadata.name/namespace")
    if not job.get("apiVersion") or not job.get("kind"):
        errors.append("trialSpec apiVersion/kind")
    return errors


# --------------------------------------------------------------------------- (a) the object


def test_experiment_round_trips_the_models_and_yaml(tmp_path: Path) -> None:
    exp = _experiment(parent_run_id="0123abcd")
    data = exp.to_dict()
    # The generated models ignore unknown keys: a round trip that keeps every key and
    # value shows that nothing was misspelt or dropped.
    assert V1beta1Experiment.from_dict(data).to_dict() == data
    assert read_experiment(write_experiment(exp, tmp_path / "exp.yaml")).to_dict() == data
    assert data["apiVersion"] == "kubeflow.org/v1beta1" and data["kind"] == "Experiment"
    assert _webhook_errors(data) == []
    spec = data["spec"]
    assert spec["objective"] == {
        "additionalMetricNames": ["val_loss", "loss", "accuracy"],
        "metricStrategies": [{"name": m, "value": "latest"}
                             for m in ("val_accuracy", "val_loss", "loss", "accuracy")],
        "objectiveMetricName": "val_accuracy", "type": "maximize"}
    assert spec["algorithm"] == {"algorithmName": "tpe", "algorithmSettings": [
        {"name": "random_state", "value": "7"}]}
    assert spec["earlyStopping"]["algorithmName"] == "medianstop"
    assert (spec["maxTrialCount"], spec["parallelTrialCount"], spec["maxFailedTrialCount"]) \
        == (6, 3, 1)
    assert spec["metricsCollectorSpec"] == {"collector": {"kind": "StdOut"}}


def test_trial_job_is_a_valid_kubernetes_job() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    template = _experiment().to_dict()["spec"]["trialTemplate"]
    job = template["trialSpec"]
    kv.validate(job, K8S_VERSION, strict=True)  # raises on any schema error or unknown field
    pod = job["spec"]["template"]
    assert IoK8sApiCoreV1PodTemplateSpec.from_dict(pod).to_dict() == pod
    assert job["spec"]["backoffLimit"] == 0 and pod["spec"]["restartPolicy"] == "Never"
    (container,) = pod["spec"]["containers"]
    assert container["name"] == template["primaryContainerName"] == CONTAINER
    assert container["image"].endswith("/step-torch:0.1.0")
    assert container["command"] == ["sh", "-c"]
    assert container["args"][0].startswith(f"python -m {MODULE} --data /data/digits ")
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["optional"] is True
    sc, pod_sc = container["securityContext"], pod["spec"]["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and pod_sc["runAsUser"] == 1000
    tensorflow = _experiment(base=BASE.model_copy(update={"framework": Framework.TENSORFLOW}))
    tf_job = tensorflow.to_dict()["spec"]["trialTemplate"]["trialSpec"]
    assert tf_job["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
        "/step-tensorflow:0.1.0")


def test_pruners_map_to_katib_algorithms() -> None:
    none = _experiment(_space(pruner="none")).to_dict()["spec"]
    assert "earlyStopping" not in none and none["algorithm"]["algorithmName"] == "tpe"
    hb = _experiment(_space(pruner="hyperband", trials=12), parallel=9,
                     base=BASE.model_copy(update={"epochs": 10})).to_dict()
    assert _webhook_errors(hb) == []
    spec = hb["spec"]
    assert "earlyStopping" not in spec
    assert spec["algorithm"] == {"algorithmName": "hyperband", "algorithmSettings": [
        {"name": "resource_name", "value": "epochs"}, {"name": "eta", "value": "3"},
        {"name": "r_l", "value": "10"}]}
    epochs = next(p for p in spec["parameters"] if p["name"] == "epochs")
    assert epochs == {"feasibleSpace": {"distribution": "uniform", "max": "10", "min": "1"},
                      "name": "epochs", "parameterType": "int"}
    with pytest.raises(ConfigError, match=r"needs parallel and trials >= 9 \(got parallel 3"):
        _experiment(_space(pruner="hyperband", trials=12), parallel=3,
                    base=BASE.model_copy(update={"epochs": 10}))
    regression = _experiment(task="regression").to_dict()["spec"]["objective"]
    assert (regression["objectiveMetricName"], regression["type"]) == ("val_rmse", "minimize")


@pytest.mark.parametrize(("changes", "message"), [
    ({"name": "Digits_Torch"}, "experiment name 'Digits_Torch'"),
    ({"namespace": "-x"}, "experiment namespace '-x'"),
    ({"space": {"model_options.a_b": {"type": "int", "low": 1, "high": 2},
                "model_options.a__b": {"type": "int", "low": 1, "high": 2}}},
     "Katib name 'model-options-a-b' is also model_options.a_b's"),
    ({"space": {"model_options.act": {"type": "categorical", "choices": ["re'lu", "tanh"]}}},
     "params.model_options.act: Katib needs distinct choices"),
])
def test_bad_input_is_named(changes: dict[str, Any], message: str) -> None:
    space = parse_space({"params": changes.pop("space")}, "s") if "space" in changes else None
    args = {"name": "digits-torch", "namespace": "twinflow", **changes}
    with pytest.raises(ConfigError, match=re.escape(message)):
        katib_experiment(space or _space(), BASE, "/d", args["name"], args["namespace"], 2,
                         "http://mlflow:5000", task="multiclass")


# --------------------------------------------------------------------------- (b) the mapping


def test_each_parameter_type_maps() -> None:
    params = {p["name"]: p for p in _experiment().to_dict()["spec"]["parameters"]}
    assert params == {
        "learning-rate": {"name": "learning-rate", "parameterType": "double", "feasibleSpace": {
            "distribution": "logUniform", "min": "0.0001", "max": "0.03"}},
        "batch-size": {"name": "batch-size", "parameterType": "int", "feasibleSpace": {
            "distribution": "uniform", "min": "16", "max": "64"}},
        "model-options-width": {"name": "model-options-width", "parameterType": "int",
                                "feasibleSpace": {"distribution": "logUniform", "min": "8",
                                                  "max": "32"}},
        "model-options-dropout": {"name": "model-options-dropout",
                                  "parameterType": "categorical",
                                  "feasibleSpace": {"list": ["0.0", "0.2"]}},
        "precision": {"name": "precision", "parameterType": "categorical",
                      "feasibleSpace": {"list": ["fp32", "bf16"]}}}


def test_names_round_trip_and_katib_values_cast_back() -> None:
    space = _space()
    names = katib_names(space)
    assert names["model_options.width"] == katib_name("model_options.width") \
        == "model-options-width"
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", n) for n in names.values())
    assert {twinflow_name(space, n) for n in names.values()} == set(space.params)
    with pytest.raises(ConfigError, match="'depth' is not in the search space"):
        twinflow_name(space, "depth")
    # The winner as Katib reports it: Katib names, values as text (hyperopt's floats).
    exp = _experiment(space)
    exp.status = V1beta1ExperimentStatus.from_dict({"currentOptimalTrial": {
        "bestTrialName": "digits-torch-abc", "parameterAssignments": [
            {"name": "learning-rate", "value": "0.0030000000000000005"},
            {"name": "batch-size", "value": "32"},
            {"name": "model-options-width", "value": "16"},
            {"name": "model-options-dropout", "value": "0.2"},
            {"name": "precision", "value": "bf16"}]}})
    best = best_params(exp, space, BASE)
    assert best == {"learning_rate": 0.0030000000000000005, "batch_size": 32,
                    "model_options.width": 16, "model_options.dropout": 0.2,
                    "precision": "bf16"}
    assert type(best["batch_size"]) is int and type(best["model_options.dropout"]) is float


@pytest.mark.parametrize(("pairs", "message"), [
    (["learning_rat=0.01"], "--param learning_rat: unknown parameter"),
    (["learning_rate=0.01", "learning_rate=0.02"], "--param learning_rate: given twice"),
    (["learning_rate=0.5"], "outside the space's range"),
    (["batch_size=16.5"], "--param batch_size=16.5: not an integer"),
    (["precision=fp64"], "not one of the choices fp32, bf16"),
    (["learning_rate=nan"], "not a finite number"),
    (["learning_rate"], "expected NAME=VALUE"),
    (["learning_rate=1e-3"], "missing --param for batch_size, model_options.width"),
])
def test_trial_params_are_checked(pairs: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_params(_space(), pairs)


def test_trial_params_are_typed_and_metrics_stay_readable() -> None:
    got = parse_params(_space(), ["learning_rate=3e-04", "batch_size=32.0",
                                  "model_options.width=8", "model_options.dropout=0.0",
                                  "precision=fp32"])
    assert got == {"learning_rate": 3e-4, "batch_size": 32, "model_options.width": 8,
                   "model_options.dropout": 0.0, "precision": "fp32"}
    # exp(log(high)) lands an ulp above high: still the range's end.
    assert parse_params(_space(), ["learning_rate=0.030000000000000006", "batch_size=64",
                                   "model_options.width=32", "model_options.dropout=0.2",
                                   "precision=bf16"])["learning_rate"] == 0.03
    for value in (1e-05, 0.9712, -2.5e-7, 1.0, 123456789.25, 1e22):
        text = format_metric(value)
        match = KATIB_FILTER.fullmatch(f"m={text}")
        assert match and float(match.group(2)) == value, text


# --------------------------------------------------------------------------- (c, d) trials


def _katib_pod_command(exp: V1beta1Experiment, values: dict[str, str], trial: str,
                       metrics_dir: Path) -> list[str]:
    """What Katib makes of the template for one trial: trial parameters substituted in the
    trial spec's JSON text (controller), then the primary container wrapped for the StdOut
    collector (pkg/webhook/v1beta1/pod/utils.go wrapWorkerContainer; Kubernetes turns its
    ``$$$$`` into the shell's ``$$``)."""
    template = exp.to_dict()["spec"]["trialTemplate"]
    text = json.dumps(template["trialSpec"])
    for tp in template["trialParameters"]:
        value = trial if tp["name"] == TRIAL_NAME else values[tp["reference"]]
        text = text.replace(PARAM_PLACEHOLDER.format(tp["name"]), value)
    job = json.loads(text)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command, args = container["command"], list(container["args"])
    assert command == ["sh", "-c"]  # Katib keeps a `sh -c` command and appends to its args
    args += [f"1>{metrics_dir / 'metrics.log'} 2>&1",
             "&&", f"echo completed > {metrics_dir / '$$.pid'}"]
    return [*command, " ".join(args)]


def _katib_observations(log_text: str, metrics: list[str]) -> list[tuple[str, str, str]]:
    """Katib's parseLogsInTextFormat (pkg/metricscollector/v1beta1/file-metricscollector):
    (timestamp, name, value) of every reported metric, in order."""
    found = []
    for line in log_text.split("\n"):
        if not any(m in line for m in metrics):
            continue
        first, _, _ = line.partition(" ")
        for match in KATIB_FILTER.findall(line):
            if match[0].strip() in metrics:
                found.append((first, match[0].strip(), match[1].strip()))
    return found


def _trial_env() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1"}


@pytest.mark.timeout(300)
def test_real_trial_reports_what_mlflow_logged(transformed: tuple[Path, Path], store: str,
                                               tmp_path: Path) -> None:
    space = _space()
    client = MlflowClient()
    with mlflow.start_run(run_name="pipeline") as pipeline, \
            mlflow.start_run(run_name="katib-tune", nested=True) as parent:
        pass
    exp = katib_experiment(space, BASE, str(transformed[0]), "digits-torch", "twinflow", 2,
                           store, task="multiclass", parent_run_id=parent.info.run_id)
    values = {"learning-rate": "0.0031622776601683794", "batch-size": "32",
              "model-options-width": "16", "model-options-dropout": "0.2",
              "precision": "fp32"}
    command = _katib_pod_command(exp, values, "digits-torch-x7k2p9qd", tmp_path)
    proc = subprocess.run(command, env=_trial_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=280)
    log_text = (tmp_path / "metrics.log").read_text()
    assert proc.returncode == 0, log_text[-3000:]
    (marker,) = tmp_path.glob("*.pid")  # Katib's "main process completed" mark
    assert marker.read_text().strip() == "completed"

    objective = exp.to_dict()["spec"]["objective"]
    metrics = [objective["objectiveMetricName"], *objective["additionalMetricNames"]]
    observed = _katib_observations(log_text, metrics)
    assert len(observed) == 2 * len(metrics)  # every metric, every epoch
    for stamp, _, _ in observed:  # the timestamp Katib's early stopping orders reports by
        assert datetime.fromisoformat(stamp).tzinfo is not None

    (run,) = client.search_runs([parent.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert run.info.status == "FINISHED" and run.info.run_name == "digits-torch-x7k2p9qd"
    assert run.data.tags[TUNE_STATE_TAG] == "complete"
    assert run.data.tags[TUNE_TRIAL_TAG] == "digits-torch-x7k2p9qd"
    assert run.data.tags[PIPELINE_ROOT_TAG] == pipeline.info.run_id  # closed if it crashes
    assert run.data.params == {"learning_rate": "0.0031622776601683794", "batch_size": "32",
                               "model_options.width": "16", "model_options.dropout": "0.2",
                               "precision": "fp32"}
    for name in metrics:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                               name))
        reported = [float(v) for _, n, v in observed if n == name]
        assert [s for s, _ in history] == [1, 2]
        assert reported == [v for _, v in history], name  # exactly, not approximately
    lines = [line for line in log_text.splitlines() if "epoch=" in line]
    assert [KATIB_FILTER.findall(line)[0][:2] for line in lines] == [("epoch", "1"),
                                                                     ("epoch", "2")]


def test_data_can_come_from_mlflow(transformed: tuple[Path, Path], store: str,
                                   tmp_path: Path) -> None:
    """A trial pod sees no local artifacts: --data may name the MLflow artifacts of the
    transformed data (as components.train.exchange.publish_input logs them)."""
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(transformed[0]), "cluster/train-input")
    got = resolve_data(f"runs:/{run.info.run_id}/cluster/train-input", tmp_path)
    assert sorted(p.name for p in got.iterdir()) == sorted(
        p.name for p in transformed[0].iterdir())
    assert resolve_data(str(transformed[0]), tmp_path) == transformed[0]
    with pytest.raises(DataError, match="--data runs:/0000/none: cannot download"):
        resolve_data("runs:/0000/none", tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        resolve_data(str(tmp_path / "absent"), tmp_path)


def test_bad_param_name_fails_clearly(transformed: tuple[Path, Path], store: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", MODULE, "--data", str(transformed[0]),
         "--base", BASE.model_dump_json(), "--space", _space().model_dump_json(),
         "--param", "learnin_rate=0.01"],
        env=_trial_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ""  # nothing that Katib could take for a metric
    assert ("twinflow: error: katib trial: --param learnin_rate: unknown parameter; the "
            "search space has learning_rate, batch_size") in proc.stderr


@pytest.mark.timeout(180)
def test_sigterm_ends_the_trial_as_pruned(transformed: tuple[Path, Path], store: str) -> None:
    """Katib's early stopping terminates the trial process: the run is FINISHED, pruned."""
    client = MlflowClient()
    with mlflow.start_run(run_name="katib-tune") as parent:
        pass
    long = BASE.model_copy(update={"epochs": 200})
    proc = subprocess.Popen(
        [sys.executable, "-m", MODULE, "--data", str(transformed[0]),
         "--base", long.model_dump_json(), "--space", _space().model_dump_json(),
         "--parent-run-id", parent.info.run_id, "--trial-name", "stopped",
         "--param", "learning_rate=0.001", "--param", "batch_size=64",
         "--param", "model_options.width=8", "--param", "model_options.dropout=0.0",
         "--param", "precision=fp32"],
        env=_trial_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first epoch's report: training is under way
        assert " epoch=1 " in first
        proc.terminate()
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    (run,) = client.search_runs([parent.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert run.info.status == "FINISHED" and run.data.tags[TUNE_STATE_TAG] == "pruned"
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) < 200
