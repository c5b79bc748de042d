"""What every framework adapter shares: the model spec, the adapter interface, progress.

:class:`FrameworkAdapter` is the extension point: a framework is one package
under ``components/frameworks/`` whose ``ADAPTER`` is an instance of a
subclass, plus one line in the registry (``components/frameworks/__init__.py``).
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
from tqdm import tqdm

from components.data.dataset import ArraySplit, DatasetMetadata
from components.errors import ConfigError
from components.export.candidates import Built, RawModel
from components.export.manifest import ExportFormat
from components.models.user import IMAGE_ONLY, ModelRef
from components.tasks import Outputs, Task, TaskName, get_task
from components.train.k8s.kinds import JobKind

if TYPE_CHECKING:
    from components.config import CompressConfig, TrainConfig
    from components.transform.fitted import FittedTransform

SPEC_FILE = "spec.json"
RAW_SUBDIR = "raw"  # the raw-input model's folder inside a model artifact


@dataclass(frozen=True)
class ModelSpec:
    """What a model builder is told, identical for both frameworks, saved beside the
    weights so that the model can be rebuilt.

    ``kind`` is a built-in architecture of the zoo (``linear``, ``mlp``, ``cnn``
    (the background articles' network), ``resnet``) or the user's model
    (a file's name, or ``module:function``); ``options`` are the builder's
    keyword arguments; a user file's code is ``source`` (digest ``digest``).
    Rows arrive flat (``n_features`` float32 columns; image rows channels-last,
    ``image_shape`` = (height, width, channels)); the network returns
    ``n_outputs`` logits.
    """

    kind: str
    n_features: int
    n_classes: int  # 0 for regression
    image_shape: tuple[int, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    feature_names: tuple[str, ...] = ()
    task: str = TaskName.MULTICLASS.value
    source: str = ""
    digest: str = ""
    outputs: str = Outputs.LOGITS.value  # what the network returns (components.tasks)
    # Regression: label = label_shift + label_scale * (what the builder's network returns),
    # a fixed last layer the framework adds (so that exports answer in the label's units).
    label_shift: float = 0.0
    label_scale: float = 1.0

    @classmethod
    def for_dataset(cls, meta: DatasetMetadata, model: ModelRef | None = None,
                    options: dict[str, Any] | None = None,
                    binary_logits: int = 2) -> ModelSpec:
        """The spec of ``model`` (default: the CNN for image data, an MLP otherwise)."""
        shape = tuple(meta.image_shape) if meta.image_shape else None
        kind = model.name if model is not None and model.name else ("cnn" if shape else "mlp")
        if kind in IMAGE_ONLY and shape is None:
            raise ConfigError(f"model {kind}: needs image data; {meta.name} is tabular "
                              f"(use linear or mlp, or your own model)")
        outputs = meta.task_object.outputs(meta.n_classes, binary_logits)
        return cls(kind=kind, n_features=len(meta.features), n_classes=meta.n_classes,
                   image_shape=shape, options=dict(options or {}),
                   feature_names=tuple(meta.features), task=meta.task.value,
                   source=model.source if model else "", digest=model.digest if model else "",
                   outputs=outputs.value, label_shift=meta.label_shift,
                   label_scale=meta.label_scale)

    @property
    def n_outputs(self) -> int:
        """Width of the network's output: one logit per class, or one (a binary task's
        single logit, a regression value)."""
        return self.n_classes if self.output_kind is Outputs.LOGITS else 1

    @property
    def output_kind(self) -> Outputs:
        """How the network's outputs become answers."""
        return Outputs(self.outputs)

    @property
    def task_object(self) -> Task:
        """The spec's task."""
        return get_task(self.task)

    @property
    def rescales(self) -> bool:
        """The network gets the fixed de-standardising last layer (regression)."""
        return not self.task_object.is_classifier

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape as a builder should read it (the rows arrive flat)."""
        return self.image_shape or (self.n_features,)

    @property
    def ref(self) -> ModelRef:
        """The model reference this spec was made from."""
        return ModelRef(self.kind, self.source, self.digest)

    def save(self, model_dir: Path) -> None:
        """Write the spec next to the weights so the model can be rebuilt."""
        (model_dir / SPEC_FILE).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, model_dir: Path) -> ModelSpec:
        """Read a spec written by :meth:`save`."""
        data = json.loads((model_dir / SPEC_FILE).read_text(encoding="utf-8"))
        if data.get("image_shape") is not None:
            data["image_shape"] = tuple(data["image_shape"])
        data["feature_names"] = tuple(data.get("feature_names", ()))
        return cls(**data)


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch reports, identically for both frameworks.

    ``score`` is the task's epoch metric (:attr:`Task.epoch_metric`, named by
    ``metric``): accuracy for classifiers, RMSE in the label's units for regression.
    """

    epoch: int
    loss: float
    score: float
    val_loss: float
    val_score: float
    seconds: float
    metric: str = "accuracy"

    def as_metrics(self) -> dict[str, float]:
        """Metric names as logged to MLflow (``accuracy``/``val_accuracy``, or ``rmse``...)."""
        return {"loss": self.loss, self.metric: self.score, "val_loss": self.val_loss,
                f"val_{self.metric}": self.val_score, "seconds": self.seconds}


EpochCallback = Callable[[EpochMetrics], None]


@dataclass(frozen=True)
class TrainContext:
    """Where this process stands in a (possibly multi-process) training run.

    Only the chief (rank 0) reports metrics and writes the model and checkpoints;
    every rank trains on its slice of each global batch.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    checkpoint_dir: Path | None = None
    resume: bool = False

    @property
    def is_chief(self) -> bool:
        """Rank 0 logs, saves and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one training process."""
        return self.world_size > 1


@dataclass(frozen=True)
class WorkerProcess:
    """One process of a local multi-process launch: a label for errors, the arguments
    after the Python interpreter, and the environment it adds."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


class FrameworkAdapter(ABC):
    """Everything the steps need from a training framework, one subclass per framework.

    A framework's quirks are class attributes or methods here, never a comparison
    of framework names at a call site (see :mod:`components.frameworks`). An
    adapter object is cheap to create and import: methods import the framework
    itself when called, so looking up an adapter's attributes (its image, its
    preload list) never imports torch or TensorFlow.
    """

    #: The framework's name, as users choose it (``--framework``) and as the registry
    #: maps it.
    name: ClassVar[str]
    #: Step image kind (components.images) that has this framework installed.
    image: ClassVar[str]
    #: Its package, when a plain ``pip install`` in an image resolves a GPU build and an
    #: offline image build must take the CPU wheel the host's pip downloads ('' if not).
    cpu_wheel: ClassVar[str] = ""
    #: Format of the raw-input model (transform + network) the train step writes into
    #: ``model/raw/<raw_model_name>``; None: the framework writes none.
    raw_format: ClassVar[ExportFormat | None] = None
    raw_model_name: ClassVar[str] = ""
    #: Under the framework's multi-worker strategy every rank must take part in saving
    #: (MultiWorkerMirroredStrategy does; DDP does not).
    every_rank_saves: ClassVar[bool] = False
    #: ``workers=0`` means one process per visible GPU (else one process using them all).
    per_gpu_processes: ClassVar[bool] = False
    #: Cluster job kinds that run this framework, the default first; () = none.
    job_kinds: ClassVar[tuple[JobKind, ...]] = ()
    #: An untrained model answers a forward pass (checked on a real batch before
    #: training); False for estimators that cannot predict before ``fit``.
    forward_before_training: ClassVar[bool] = True
    #: Modules a warm task interpreter imports for this framework's steps.
    preload: ClassVar[tuple[str, ...]] = ()
    #: What the framework's steps write, as the comparison report lists it.
    export_formats: ClassVar[str] = ""

    @abstractmethod
    def build_model(self, spec: ModelSpec, seed: int) -> Any:
        """The spec's network, initialised from ``seed``."""

    @abstractmethod
    def train(self, spec: ModelSpec, train: ArraySplit, val: ArraySplit, config: TrainConfig,
              ctx: TrainContext, on_epoch: EpochCallback) -> Any:
        """Fit this rank's share; the chief calls ``on_epoch`` after each epoch."""

    @abstractmethod
    def device_count(self) -> int:
        """Visible GPUs."""

    @abstractmethod
    def forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        """The network's outputs (logits, or values) for a float32 feature matrix."""

    def predict(self, model: Any, x: np.ndarray,
                outputs: Outputs = Outputs.LOGITS) -> np.ndarray:
        """Answers: class probabilities, or values in the label's units (regression)."""
        return outputs.answers(self.forward(model, x))

    @abstractmethod
    def count_params(self, model: Any) -> int:
        """Trainable parameters (the zoo's architectures match across frameworks)."""

    @abstractmethod
    def save_model(self, model: Any, spec: ModelSpec, model_dir: Path) -> None:
        """Write the trained model and its spec into ``model_dir``."""

    @abstractmethod
    def load_model(self, model_dir: Path) -> Any:
        """Read what :meth:`save_model` wrote."""

    @abstractmethod
    def log_model(self, model: Any, name: str, sample: np.ndarray) -> str:
        """Log with the framework's MLflow flavor; return the model URI."""

    @abstractmethod
    def build_variants(self, model: Any, spec: ModelSpec, train: ArraySplit,
                       config: CompressConfig, out_dir: Path, work: Path) -> Built:
        """fp32 exports into ``out_dir`` (they ship), compressed candidates into ``work``."""

    def export_raw_model(self, model: Any, fitted: FittedTransform, path: Path) -> Path:
        """Write the network with the fitted transform in front to ``path`` (a file or a
        directory, as the format has it; :meth:`raw_model` says where), the transform's
        JSON beside it."""
        raise NotImplementedError(f"{self.name} writes no raw-input model")

    def raw_model(self, model_dir: Path) -> RawModel | None:
        """Where the train step put the raw-input model in a model artifact (None: the
        framework writes none)."""
        if self.raw_format is None:
            return None
        return RawModel(model_dir / RAW_SUBDIR / self.raw_model_name, self.raw_format)

    def context_from_env(self, checkpoint_dir: Path | None, resume: bool) -> TrainContext:
        """Rank and world size as this framework's launcher set them (default: alone)."""
        return TrainContext(checkpoint_dir=checkpoint_dir, resume=resume)

    def local_launch(self, workers: int, worker_argv: list[str]) -> list[WorkerProcess]:
        """The processes that run ``workers`` ranks of ``worker_argv`` on this machine."""
        raise ConfigError(f"{self.name} cannot train on {workers} processes")

    def cluster_launcher(self, kind: JobKind) -> list[str]:
        """What a cluster job's pod runs ``-m components.train.worker`` with."""
        del kind
        return ["python"]


class TrainingModule(Protocol):
    """What a framework package's ``training`` module defines (mypy checks each package's
    module against it: see the ``TYPE_CHECKING`` block of each adapter)."""

    def build_model(self, spec: ModelSpec, seed: int) -> Any: ...

    def train(self, spec: ModelSpec, train: ArraySplit, val: ArraySplit, config: TrainConfig,
              ctx: TrainContext, on_epoch: EpochCallback) -> Any: ...

    def device_count(self) -> int: ...

    def forward(self, model: Any, x: np.ndarray) -> np.ndarray: ...

    def count_params(self, model: Any) -> int: ...

    def save_model(self, model: Any, spec: ModelSpec, model_dir: Path) -> None: ...

    def load_model(self, model_dir: Path) -> Any: ...

    def log_model(self, model: Any, name: str, sample: np.ndarray) -> str: ...


class VariantsModule(Protocol):
    """What a framework package's ``variants`` module defines."""

    def build_variants(self, model: Any, spec: ModelSpec, train: ArraySplit,
                       config: CompressConfig, out_dir: Path, work: Path) -> Built: ...


class RawLayerModule(Protocol):
    """What a framework package's ``raw_layer`` module defines."""

    def export_raw_model(self, model: Any, fitted: FittedTransform, path: Path) -> Path: ...


class PackageAdapter(FrameworkAdapter):
    """An adapter over a package laid out like MLflow's flavors: modules ``training``,
    ``variants`` and ``raw_layer`` with the functions of :class:`TrainingModule`,
    :class:`VariantsModule` and :class:`RawLayerModule`. Each method imports its
    module when first called, so the adapter itself stays free of the framework."""

    #: The package holding the modules, e.g. ``components.frameworks.torch``.
    package: ClassVar[str]

    def _training(self) -> TrainingModule:
        module: TrainingModule = importlib.import_module(f"{self.package}.training")
        return module

    def build_model(self, spec: ModelSpec, seed: int) -> Any:
        return self._training().build_model(spec, seed)

    def train(self, spec: ModelSpec, train: ArraySplit, val: ArraySplit, config: TrainConfig,
              ctx: TrainContext, on_epoch: EpochCallback) -> Any:
        return self._training().train(spec, train, val, config, ctx, on_epoch)

    def device_count(self) -> int:
        return self._training().device_count()

    def forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        return self._training().forward(model, x)

    def count_params(self, model: Any) -> int:
        return self._training().count_params(model)

    def save_model(self, model: Any, spec: ModelSpec, model_dir: Path) -> None:
        self._training().save_model(model, spec, model_dir)

    def load_model(self, model_dir: Path) -> Any:
        return self._training().load_model(model_dir)

    def log_model(self, model: Any, name: str, sample: np.ndarray) -> str:
        return self._training().log_model(model, name, sample)

    def build_variants(self, model: Any, spec: ModelSpec, train: ArraySplit,
                       config: CompressConfig, out_dir: Path, work: Path) -> Built:
        variants: VariantsModule = importlib.import_module(f"{self.package}.variants")
        return variants.build_variants(model, spec, train, config, out_dir, work)

    def export_raw_model(self, model: Any, fitted: FittedTransform, path: Path) -> Path:
        raw_layer: RawLayerModule = importlib.import_module(f"{self.package}.raw_layer")
        return raw_layer.export_raw_model(model, fitted, path)


class EpochProgress:
    """A tqdm bar per epoch over batches, with loss/accuracy in the postfix.

    One bar per epoch (rather than one for the run) means each finished epoch
    leaves a line behind even when the output is a pipe, as under KFP.
    """

    def __init__(self, epochs: int, batches: int, enabled: bool) -> None:
        self.epochs, self.batches, self.enabled = epochs, batches, enabled
        self._bar: tqdm | None = None

    def start(self, epoch: int) -> None:
        """Open the bar of ``epoch`` (1-based)."""
        if self.enabled:
            self._bar = tqdm(total=self.batches, desc=f"epoch {epoch}/{self.epochs}",
                             unit="batch", leave=True, mininterval=0.5)

    def step(self, loss: float, batches: int = 1) -> None:
        """Advance by ``batches`` (more than one when the trainer runs several batches per
        call, as Keras' ``steps_per_execution`` does)."""
        if self._bar is not None:
            before = self._bar.n
            self._bar.update(batches)
            if self._bar.n // 10 != before // 10:
                self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def end(self, metrics: EpochMetrics) -> None:
        """Close the bar with the epoch's metrics."""
        if self._bar is not None:
            self._bar.set_postfix({"loss": f"{metrics.loss:.4f}",
                                   metrics.metric: f"{metrics.score:.3f}",
                                   f"val_{metrics.metric}": f"{metrics.val_score:.3f}"})
            self._bar.close()
            self._bar = None
