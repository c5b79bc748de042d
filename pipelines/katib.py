"""A twinflow search space as a Katib Experiment, for clusters that run Katib.

Built with the typed models of ``kubeflow-katib-api`` (Katib's CRD carries no schema),
written to YAML for ``kubectl apply``. The mapping:

- parameters: ``float`` -> ``double``, ``int`` -> ``int`` (``log`` -> distribution
  ``logUniform``, else ``uniform``), ``categorical`` -> ``categorical`` with each choice
  as text (:func:`components.tune.katib_trial.choice_text`). Katib's names are DNS-ish
  (:func:`katib_name`: ``model_options.hidden`` -> ``model-options-hidden``); the space
  maps them back (:func:`twinflow_name`), and two names that would collide are an error.
- objective: the task's validation metric (or the space's ``objective``), its direction
  as ``maximize``/``minimize``, the other epoch metrics as additional metrics, every
  metric's strategy ``latest``: a trial scores its last epoch, as an Optuna trial does.
- algorithm: ``tpe`` with ``random_state`` = the space's seed (else the run's; Katib
  wants it >= 0, so it is taken modulo 2**31). Pruner ``median`` adds early stopping
  ``medianstop`` (``min_trials_required`` 2, ``start_step`` the warm-up of Optuna's
  ``MedianPruner(n_startup_trials=2, n_warmup_steps=median_warmup(...))``); ``none``
  adds none.
  ``hyperband`` has no Katib early-stopping counterpart: it becomes Katib's
  ``hyperband`` *algorithm* (random sampling plus successive halving, so no TPE and no
  seed), with ``epochs`` as its resource from 1 up to the space's high end (or the base
  config's epochs when the space does not tune them), as Optuna's
  ``HyperbandPruner(min_resource=1)`` uses epochs; Katib needs ``parallel`` (and the
  trial budget) of at least eta**s_max trials for it, else this is a ConfigError.
- budgets: ``maxTrialCount`` = ``space.trials``, ``parallelTrialCount`` = ``parallel``
  (at most the budget, as Katib requires), ``maxFailedTrialCount`` = a tenth of the
  budget, at least 1. ``timeout_minutes`` has no Katib counterpart and is not mapped.
- trial: a ``batch/v1`` Job (no retries) on the framework's step image, running
  ``python -m components.tune.katib_trial`` through ``sh -c`` (Katib joins the command
  into one shell string to redirect it to its metrics file, so every word is quoted
  here), non-root, with ``MLFLOW_TRACKING_URI`` (and the MLflow credentials Secret,
  optional). The trial prints Katib's StdOut format; ``data_path`` is a directory in
  the pod or an MLflow artifact URI of the transformed data.
"""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from kubeflow_katib_api.models import (
    IoK8sApiCoreV1PodTemplateSpec,
    IoK8sApimachineryPkgApisMetaV1ObjectMeta,
    V1beta1AlgorithmSetting,
    V1beta1AlgorithmSpec,
    V1beta1CollectorSpec,
    V1beta1EarlyStoppingSetting,
    V1beta1EarlyStoppingSpec,
    V1beta1Experiment,
    V1beta1ExperimentSpec,
    V1beta1FeasibleSpace,
    V1beta1MetricsCollectorSpec,
    V1beta1MetricStrategy,
    V1beta1ObjectiveSpec,
    V1beta1ParameterSpec,
    V1beta1TrialParameterSpec,
    V1beta1TrialTemplate,
)

from components.config import TrainConfig
from components.errors import ConfigError
from components.frameworks import get_adapter
from components.images import image
from components.tasks import get_task
from components.train.k8s.manifests import LABELS, SECURITY_CONTEXT
from components.tune.katib_trial import MODULE, choice_text, parse_value
from components.tune.space import (
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSpace,
    max_epochs,
    median_warmup,
)

API_VERSION = "kubeflow.org/v1beta1"
CONTAINER = "trial"  # the trial Job's container: Katib's primaryContainerName
TRIAL_NAME = "trialName"  # a trial parameter naming the Katib trial (a meta reference)
# Katib's defaults for a batch/v1 Job, set explicitly (its validator requires both).
SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
HYPERBAND_ETA = 3
MEDIAN_STOP = {"min_trials_required": "2"}  # start_step: median_warmup of the longest trial
# Katib hands the trial command to `sh -c` as one argument; Linux caps one at 128 KiB.
MAX_COMMAND = 100_000
# Pod placement as the step images expect: uid/gid 1000 (images/step-*/Dockerfile).
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
# The MLflow basic-auth Secret of manifests/overlays/cluster (as pipelines/submit.py).
CREDENTIALS_SECRET = "mlflow-client-credentials"
CREDENTIAL_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SAFE_CHOICE = re.compile(r"^[\w .,:+/@%=-]*$")  # survives Katib's JSON text substitution


def katib_name(name: str) -> str:
    """A twinflow parameter name as a Katib-safe one: lower case, runs of anything
    but letters and digits as one ``-`` (``model_options.hidden`` -> ``model-options-hidden``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def katib_names(space: SearchSpace) -> dict[str, str]:
    """twinflow name -> Katib name for every parameter; ConfigError on a collision."""
    names: dict[str, str] = {}
    taken: dict[str, str] = {}
    for name in space.params:
        safe = katib_name(name)
        if not safe or safe in taken:
            raise ConfigError(f"search space: params.{name}: its Katib name {safe!r} is "
                              + (f"also {taken[safe]}'s" if safe in taken else "empty"))
        names[name], taken[safe] = safe, name
    return names


def twinflow_name(space: SearchSpace, name: str) -> str:
    """The space's parameter whose Katib name is ``name``."""
    for twin, safe in katib_names(space).items():
        if safe == name:
            return twin
    raise ConfigError(f"Katib parameter {name!r} is not in the search space "
                      f"({', '.join(katib_names(space).values())})")


def parameter_spec(name: str, spec: FloatParam | IntParam | CategoricalParam
                   ) -> V1beta1ParameterSpec:
    """One parameter of ``spec.parameters``."""
    if isinstance(spec, CategoricalParam):
        texts = [choice_text(c) for c in spec.choices]
        bad = [t for t in texts if not _SAFE_CHOICE.match(t)]
        if bad or len(set(texts)) < len(texts):
            raise ConfigError(f"search space: params.{name}: Katib needs "
                              "distinct choices of letters, digits, spaces and .,:+/@%=_- "
                              f"(got {texts})")
        space = V1beta1FeasibleSpace(list=texts)
        kind = "categorical"
    else:
        kind = "int" if isinstance(spec, IntParam) else "double"
        space = V1beta1FeasibleSpace(min=str(spec.low), max=str(spec.high),
                                     distribution="logUniform" if spec.log else "uniform")
    return V1beta1ParameterSpec(name=katib_name(name), parameter_type=kind, feasible_space=space)


def _objective(space: SearchSpace, task: str) -> V1beta1ObjectiveSpec:
    metric, direction = space.resolved_objective(task)
    score = get_task(task).epoch_metric
    names = [metric, *(m for m in ("val_loss", f"val_{score}", "loss", score) if m != metric)]
    return V1beta1ObjectiveSpec(
        type=direction, objective_metric_name=metric, additional_metric_names=names[1:],
        metric_strategies=[V1beta1MetricStrategy(name=m, value="latest") for m in names])


def searched_space(space: SearchSpace, base: TrainConfig) -> SearchSpace:
    """The space Katib searches: ``space``, but with pruner hyperband ``epochs`` is the
    algorithm's resource, an int from 1 to the space's high end (or ``base.epochs``)."""
    if space.pruner != "hyperband":
        return space
    current = space.params.get("epochs")
    high = int(current.high) if isinstance(current, IntParam) else base.epochs
    if high < 2 or isinstance(current, CategoricalParam):
        raise ConfigError("search space: pruner hyperband on Katib needs epochs as an int "
                          f"range (its resource) reaching at least 2 (got {current or high})")
    epochs = IntParam(type="int", low=1, high=high)
    return space.model_copy(update={"params": {**space.params, "epochs": epochs}})


def _search(space: SearchSpace, base: TrainConfig, parallel: int
            ) -> tuple[SearchSpace, V1beta1AlgorithmSpec, V1beta1EarlyStoppingSpec | None]:
    """(the space Katib searches, its algorithm, its early stopping) for the pruner."""
    space = searched_space(space, base)
    if space.pruner == "hyperband":
        high = base.epochs
        epochs = space.params["epochs"]
        if isinstance(epochs, IntParam):
            high = epochs.high
        need = math.ceil(HYPERBAND_ETA ** int(math.log(high) / math.log(HYPERBAND_ETA)))
        if min(parallel, space.trials) < need:
            raise ConfigError(f"pruner hyperband on Katib with up to {high} epochs runs "
                              f"{need} trials at once: needs parallel and trials >= {need} "
                              f"(got parallel {parallel}, trials {space.trials}); or use "
                              "pruner median")
        settings = {"resource_name": katib_name("epochs"), "eta": str(HYPERBAND_ETA),
                    "r_l": str(high)}
        return space, V1beta1AlgorithmSpec(algorithm_name="hyperband", algorithm_settings=[
            V1beta1AlgorithmSetting(name=k, value=v) for k, v in settings.items()]), None
    seed = base.seed if space.seed is None else space.seed
    tpe = V1beta1AlgorithmSpec(algorithm_name="tpe", algorithm_settings=[
        V1beta1AlgorithmSetting(name="random_state", value=str(seed % 2**31))])
    if space.pruner == "median":
        return space, tpe, V1beta1EarlyStoppingSpec(
            algorithm_name="medianstop", algorithm_settings=[
                V1beta1EarlyStoppingSetting(name=k, value=v) for k, v in {
                    **MEDIAN_STOP,
                    "start_step": str(median_warmup(max_epochs(space, base)))}.items()])
    return space, tpe, None


def trial_command(space: SearchSpace, base: TrainConfig, data_path: str,
                  parent_run_id: str = "") -> str:
    """The trial's shell command, each value a ``${trialParameters.<katib name>}``."""
    words = ["python", "-m", MODULE, "--data", data_path, "--base", base.model_dump_json(),
             "--space", space.model_dump_json()]
    for name, safe in katib_names(space).items():
        words += ["--param", f"{name}=${{trialParameters.{safe}}}"]
    words += ["--trial-name", f"${{trialParameters.{TRIAL_NAME}}}"]
    if parent_run_id:
        words += ["--parent-run-id", parent_run_id]
    command = " ".join(shlex.quote(w) for w in words)
    if len(command.encode()) > MAX_COMMAND:
        raise ConfigError(f"the Katib trial command is {len(command.encode())} bytes (at most "
                          f"{MAX_COMMAND}: one shell argument); a model_code this large "
                          "cannot travel in it: install the model's package in the image")
    return command


def _env(tracking_uri: str, credentials_secret: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "MLFLOW_TRACKING_URI", "value": tracking_uri},
                                 {"name": "PYTHONUNBUFFERED", "value": "1"}]
    if credentials_secret:
        env += [{"name": k, "valueFrom": {"secretKeyRef": {
            "name": credentials_secret, "key": k, "optional": True}}} for k in CREDENTIAL_KEYS]
    return env


def trial_job(space: SearchSpace, base: TrainConfig, data_path: str, tracking_uri: str,
              parent_run_id: str = "", credentials_secret: str = CREDENTIALS_SECRET
              ) -> dict[str, Any]:
    """The ``batch/v1`` Job of one trial (Katib names it; so no name or namespace)."""
    cluster = base.cluster
    limits = {"cpu": cluster.cpu, "memory": cluster.memory}
    if base.gpus_per_worker:
        limits["nvidia.com/gpu"] = str(base.gpus_per_worker)
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": POD_SECURITY,
        "containers": [{
            "name": CONTAINER,
            "image": image(get_adapter(base.framework).image),
            "command": ["sh", "-c"],
            "args": [trial_command(space, base, data_path, parent_run_id)],
            "env": _env(tracking_uri, credentials_secret),
            "resources": {"requests": {"cpu": cluster.cpu, "memory": cluster.memory},
                          "limits": limits},
            "securityContext": SECURITY_CONTEXT,
        }],
    }
    if cluster.node_selector:
        pod["nodeSelector"] = dict(cluster.node_selector)
    if cluster.tolerations:
        pod["tolerations"] = [dict(t) for t in cluster.tolerations]
    labels = {**LABELS, "app.kubernetes.io/component": "tune"}
    template = IoK8sApiCoreV1PodTemplateSpec.from_dict({
        # Katib's metrics collector cannot work beside an Istio sidecar (Kubeflow's docs).
        "metadata": {"labels": labels, "annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": pod})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"labels": labels},
            "spec": {"backoffLimit": 0, "template": template.to_dict()}}


def katib_experiment(space: SearchSpace, base: TrainConfig, data_path: str, name: str,
                     namespace: str, parallel: int, tracking_uri: str, *, task: str,
                     parent_run_id: str = "",
                     credentials_secret: str = CREDENTIALS_SECRET) -> V1beta1Experiment:
    """The Katib Experiment searching ``space`` over ``base`` on the data at ``data_path``.

    ``task`` (the data set's, as ingest resolved it) picks the objective metric; the
    trials log to ``tracking_uri``, nested under ``parent_run_id`` when given.
    """
    for what, value, limit in (("name", name, 54), ("namespace", namespace, 63)):
        # A trial (and its Job) is named <experiment>-<8 characters>: a label value (63).
        if not _DNS_LABEL.match(value) or len(value) > limit:
            raise ConfigError(f"Katib experiment {what} {value!r}: lower-case letters, digits "
                              f"and '-', starting with a letter, at most {limit} characters")
    if not tracking_uri:
        raise ConfigError("Katib experiment: a tracking URI the trial pods can reach is needed")
    if parallel < 1:
        raise ConfigError(f"Katib experiment: parallel must be at least 1 (got {parallel})")
    searched, algorithm, early = _search(space, base, parallel)
    names = katib_names(searched)
    template = V1beta1TrialTemplate(
        primary_container_name=CONTAINER, success_condition=SUCCESS,
        failure_condition=FAILURE,
        trial_parameters=[
            *(V1beta1TrialParameterSpec(name=safe, reference=safe, description=twin)
              for twin, safe in names.items()),
            V1beta1TrialParameterSpec(name=TRIAL_NAME, reference="${trialSpec.Name}",
                                      description="the Katib trial's name")],
        trial_spec=trial_job(searched, base, data_path, tracking_uri, parent_run_id,
                             credentials_secret))
    spec = V1beta1ExperimentSpec(
        objective=_objective(searched, task), algorithm=algorithm, early_stopping=early,
        parameters=[parameter_spec(n, p) for n, p in searched.params.items()],
        max_trial_count=searched.trials, parallel_trial_count=min(parallel, searched.trials),
        max_failed_trial_count=min(searched.trials, max(1, searched.trials // 10)),
        metrics_collector_spec=V1beta1MetricsCollectorSpec(
            collector=V1beta1CollectorSpec(kind="StdOut")),
        trial_template=template)
    return V1beta1Experiment(
        api_version=API_VERSION, kind="Experiment", spec=spec,
        metadata=IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name, namespace=namespace,
            labels={**LABELS, "app.kubernetes.io/component": "tune"}))


def experiment_yaml(experiment: V1beta1Experiment) -> str:
    """The Experiment as YAML, in Katib's field names (what ``kubectl apply`` takes)."""
    return yaml.safe_dump(experiment.to_dict(), sort_keys=False)


def write_experiment(experiment: V1beta1Experiment, path: Path) -> Path:
    """Write ``experiment`` to ``path`` as YAML; ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(experiment_yaml(experiment), encoding="utf-8")
    return path


def read_experiment(path: Path) -> V1beta1Experiment:
    """An Experiment written by :func:`write_experiment` (or fetched with kubectl)."""
    experiment: V1beta1Experiment = V1beta1Experiment.from_dict(
        yaml.safe_load(path.read_text(encoding="utf-8")))
    return experiment


def best_params(experiment: V1beta1Experiment, space: SearchSpace,
                base: TrainConfig) -> dict[str, Any]:
    """The current optimal trial's values, by twinflow name and typed by the space (what
    :func:`components.tune.space.apply_params` takes); ConfigError while there is none."""
    space = searched_space(space, base)
    status = experiment.status
    best = status.current_optimal_trial if status else None
    if best is None or not best.parameter_assignments:
        raise ConfigError(f"Katib experiment {experiment.metadata.name}: no optimal trial yet")
    values: dict[str, Any] = {}
    for assignment in best.parameter_assignments:
        name = twinflow_name(space, assignment.name)
        values[name] = parse_value(name, space.params[name], assignment.value)
    return values
