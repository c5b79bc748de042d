"""Issue 20 figures (hyper-parameter tuning), each against a baseline measured in the
same run, per framework:

1. ``quality``: the model trained with the default TrainConfig against the model
   trained with the study's best parameters (``run_study`` with the median pruner,
   then ``apply_params``), both through the real trainer on the same splits,
   evaluated on the validation and the test split (accuracy). The study picks its
   winner by validation accuracy, so the validation figure of the tuned model is
   optimistic by construction; the test split is the honest one. A second study of
   the same space and seed with pruner "none" gives a third row: what the median
   pruner's early stops cost (the epochs after which it stopped trials are printed).
2. ``overhead``: trials per minute of ``run_study`` (one nested MLflow run per
   trial written from the recorder's thread, per-epoch metrics, the default Optuna
   storage (a journal file), the study's plots at the end; pruner "none", so every
   trial trains every epoch) against a plain hand-written Optuna loop:
   ``optuna.create_study()`` in memory, the same seeded TPE sampler, the same
   parameters suggested in the same order, objective = the adapter's ``train()``
   returning the last validation accuracy, no MLflow. Both clocks start before the
   splits are read. Ratio = run_study trials/min / plain trials/min (goal >= 0.9x).

The search space: ``learning_rate`` (float, log, 1e-4 to 3e-2), ``batch_size``
(categorical 16/32/64/128) and the width option of the data set's default model
(``model_options.hidden`` of the CNN for digits, ``model_options.width`` of the MLP
for the tabular sets; 32/64/128/256).

Everything runs in a temporary folder: its own MLflow SQLite store and artifact
root, its own Optuna journal files; the user's store is not touched.

Run with ``OMP_NUM_THREADS=1`` (see bench/common.py: PyTorch's 2 OpenMP threads stall
each other on a shared 2-core machine). The defaults take about 6.5 minutes on a quiet
2-core machine (9 with other work running).

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_tune.py [--frameworks torch tensorflow]
       [--dataset digits] [--trials 12] [--epochs 10] [--overhead-trials 12]
       [--repeats 3] [--sections quality overhead]
Prints Markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
from common import accuracy, prepare, splits, twinflow_fit

from components.config import TrainConfig
from components.data.dataset import Split, read_arrays, read_metadata
from components.frameworks import get_adapter
from components.frameworks.base import EpochMetrics, ModelSpec, TrainContext
from components.tracking import experiment_id
from components.train.model import model_spec
from components.tune.core import StudyResult, run_study
from components.tune.space import SearchSpace, apply_params, parse_space
from components.tune.storage import open_storage

DATASETS = ("digits", "wine", "breast_cancer", "iris")  # sklearn built-ins, classification
LEARNING_RATE = (1e-4, 3e-2)
BATCH_SIZES = [16, 32, 64, 128]
WIDTHS = [32, 64, 128, 256]
# The width option of each default model (components/frameworks/*/zoo.py).
WIDTH_OPTION = {"cnn": "hidden", "mlp": "width"}


def search_space(kind: str, trials: int, pruner: str) -> SearchSpace:
    """learning_rate, batch_size and the default model's width, as a search.yaml says it."""
    params: dict[str, Any] = {
        "learning_rate": {"type": "float", "low": LEARNING_RATE[0], "high": LEARNING_RATE[1],
                          "log": True},
        "batch_size": {"type": "categorical", "choices": BATCH_SIZES},
    }
    if kind in WIDTH_OPTION:
        params[f"model_options.{WIDTH_OPTION[kind]}"] = {"type": "categorical",
                                                         "choices": WIDTHS}
    return parse_space({"params": params, "trials": trials, "pruner": pruner}, "bench")


def sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


# --- 1. quality -------------------------------------------------------------------


def quality(fw: str, data: Path, kind: str, tmp: Path, args: argparse.Namespace) -> None:
    """Default config against the study's winner, on val and test. A second study of the
    same space and seed without pruning shows what the median pruner's stops cost."""
    base = TrainConfig(framework=fw, epochs=args.epochs, show_progress=False)
    _, val, test = splits(data)
    rows: dict[str, tuple[TrainConfig, Any]] = {"default": (base, twinflow_fit(base, data)[0])}
    for pruner in ("median", "none"):
        space = search_space(kind, args.trials, pruner)
        storage, name = str(tmp / f"quality-{fw}-{pruner}.log"), f"quality-{fw}-{pruner}"
        start = time.perf_counter()
        with mlflow.start_run(run_name=f"bench-tune-quality-{fw}-{pruner}"):
            result = run_study(space, base, data, storage, name)
        seconds = time.perf_counter() - start
        trials = optuna.load_study(study_name=name, storage=open_storage(storage)).trials
        stops = Counter(max(t.intermediate_values) for t in trials
                        if t.state == optuna.trial.TrialState.PRUNED)
        print(f"\n{fw}, pruner {pruner}: {result.trials_run} trials in {seconds:.0f} s, "
              f"{result.pruned} pruned (after epoch: "
              f"{', '.join(f'{e}: {n}' for e, n in sorted(stops.items())) or '-'}); best "
              f"trial {result.best_trial}, val accuracy {result.best_value:.4f}")
        tuned = apply_params(base, result.best_params)
        label = "tuned" if pruner == "median" else "tuned, pruner none"
        rows[label] = (tuned, twinflow_fit(tuned, data)[0])
    acc = {name: (accuracy(fw, m, val), accuracy(fw, m, test)) for name, (_, m) in rows.items()}
    print("\n| framework | model | learning_rate | batch_size | model_options | val accuracy | "
          "test accuracy |")
    print("|---|---|---|---|---|---|---|")
    for name, (config, _) in rows.items():
        print(f"| {fw} | {name} | {config.learning_rate:.3g} | {config.batch_size} | "
              f"`{config.model_options}` | {acc[name][0]:.4f} | {acc[name][1]:.4f} |")
    for name in ("tuned", "tuned, pruner none"):
        d_val, d_test = (acc[name][i] - acc["default"][i] for i in (0, 1))
        print(f"| {fw} | **delta** {name} - default | | | | {100 * d_val:+.2f} points | "
              f"{100 * d_test:+.2f} points |", flush=True)


# --- 2. overhead ------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """One side's study: trials per minute and the parameters it tried, in order."""

    rate: float
    params: list[dict[str, Any]]
    values: list[float]


def tuned_side(fw: str, data: Path, space: SearchSpace, base: TrainConfig, tmp: Path,
               tag: str) -> Timed:
    """``run_study`` as the tune step calls it: in an MLflow run, journal-file storage."""
    storage = str(tmp / f"overhead-{fw}-{tag}.log")  # the default kind: a journal file
    with mlflow.start_run(run_name=f"bench-tune-overhead-{fw}-{tag}"):
        start = time.perf_counter()
        result: StudyResult = run_study(space, base, data, storage, f"overhead-{fw}-{tag}")
        seconds = time.perf_counter() - start
    trials = optuna.load_study(study_name=f"overhead-{fw}-{tag}",
                               storage=open_storage(storage)).trials
    return Timed(60 * result.trials_run / seconds, [t.params for t in trials],
                 [float(t.value or 0.0) for t in trials])


def plain_side(fw: str, data: Path, kind: str, base: TrainConfig, trials: int) -> Timed:
    """The hand-written loop: an in-memory study, the same seeded TPE and the same
    suggestions (names, ranges, order), the adapter's train(), no tracking."""
    width = WIDTH_OPTION.get(kind)
    start = time.perf_counter()
    meta = read_metadata(data)
    adapter = get_adapter(fw)
    train, val = read_arrays(data, Split.TRAIN, meta), read_arrays(data, Split.VAL, meta)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("learning_rate", *LEARNING_RATE, log=True)
        batch = trial.suggest_categorical("batch_size", BATCH_SIZES)
        options = ({width: trial.suggest_categorical(f"model_options.{width}", WIDTHS)}
                   if width else {})
        config = TrainConfig(framework=fw, epochs=base.epochs, learning_rate=lr,
                             batch_size=batch, model_options=json.dumps(options),
                             show_progress=False)
        scores: list[float] = []

        def on_epoch(m: EpochMetrics) -> None:
            scores.append(m.val_score)

        adapter.train(model_spec(config, meta), train, val, config, TrainContext(), on_epoch)
        return scores[-1]

    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=base.seed))
    study.optimize(objective, n_trials=trials)
    seconds = time.perf_counter() - start
    return Timed(60 * trials / seconds, [t.params for t in study.trials],
                 [float(t.value or 0.0) for t in study.trials])


def overhead(fw: str, data: Path, kind: str, tmp: Path, args: argparse.Namespace) -> None:
    """run_study's trials/min against the plain loop's; ``repeats`` rounds, taken in
    turns (plain, run_study, run_study, plain, ...), medians."""
    base = TrainConfig(framework=fw, epochs=args.epochs, show_progress=False)
    space = search_space(kind, args.overhead_trials, "none")
    twinflow_fit(base.model_copy(update={"epochs": 1}), data)  # warm-up: imports, graphs
    plain: list[Timed] = []
    tuned: list[Timed] = []
    for r in range(args.repeats):
        order = ("plain", "tuned") if r % 2 == 0 else ("tuned", "plain")
        for side in order:
            if side == "plain":
                plain.append(plain_side(fw, data, kind, base, args.overhead_trials))
            else:
                tuned.append(tuned_side(fw, data, space, base, tmp, str(r)))
    same = sum(a == b for a, b in zip(plain[0].params, tuned[0].params, strict=False))
    p_rate = statistics.median(t.rate for t in plain)
    t_rate = statistics.median(t.rate for t in tuned)
    ratios = [b.rate / a.rate for a, b in zip(plain, tuned, strict=True)]
    rounds = f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})"
    print(f"| {fw} | {args.overhead_trials} x {args.epochs} epochs | {p_rate:.2f} | "
          f"{t_rate:.2f} | **{t_rate / p_rate:.2f}x** | {rounds} | {same} of "
          f"{args.overhead_trials} | {max(plain[0].values):.4f} / "
          f"{max(tuned[0].values):.4f} |", flush=True)
    if args.verbose:
        for label, runs in (("plain", plain), ("run_study", tuned)):
            print(f"  {label} rates: {', '.join(f'{t.rate:.2f}' for t in runs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frameworks", nargs="+", default=["torch", "tensorflow"],
                        choices=["torch", "tensorflow"])
    parser.add_argument("--dataset", default="digits", choices=DATASETS)
    parser.add_argument("--trials", type=int, default=12, help="trials of the quality study")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every fit")
    parser.add_argument("--overhead-trials", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of the overhead comparison (medians)")
    parser.add_argument("--sections", nargs="+", default=["quality", "overhead"],
                        choices=["quality", "overhead"])
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("components").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        # The bench's own store, and an experiment whose artifacts stay beside it (the
        # default experiment of a fresh SQLite store would write into ./mlruns).
        mlflow.set_tracking_uri(sqlite(tmp / "mlflow.db"))
        mlflow.set_experiment(experiment_id=experiment_id("bench-tune"))
        data = prepare(tmp, f"sklearn:{args.dataset}")
        meta = read_metadata(data)
        kind = ModelSpec.for_dataset(meta).kind
        print(f"\n{args.dataset}: {meta.rows} rows, default model {kind}, "
              f"{args.epochs} epochs per fit\n")
        if "quality" in args.sections:
            for fw in args.frameworks:
                quality(fw, data, kind, tmp, args)
        if "overhead" in args.sections:
            print("\n| framework | trials | plain Optuna trials/min | run_study trials/min | "
                  "ratio of medians | ratio per round | same params | "
                  "best val plain / run_study |")
            print("|---|---|---|---|---|---|---|---|")
            for fw in args.frameworks:
                overhead(fw, data, kind, tmp, args)


if __name__ == "__main__":
    main()
