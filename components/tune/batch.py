"""A study's trials split into batches (one per KFP task), each run by N processes.

On a laptop the pipeline runs one batch with ``--tune-parallel`` processes; on a
cluster ``dsl.ParallelFor`` runs one batch per pod. Either way every process is a
plain Optuna worker on the shared storage, and the split is decided once, by the
step that prepared the study, so a rerun only spreads what is still missing.

``python -m components.tune.batch --batch JSON --data DIR --worker I --trials K`` is
one such process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from components.config import TrainConfig
from components.data.dataset import read_metadata
from components.errors import configure_logging
from components.processes import die_with_parent
from components.train.launch import spawn, supervise
from components.tune.core import Study, run_trials
from components.tune.result import TuneBatch
from components.tune.space import SearchSpace

log = logging.getLogger(__name__)
WORKER_MODULE = "components.tune.batch"


def split(total: int, parts: int) -> list[int]:
    """``total`` trials over ``parts`` workers, as evenly as whole trials allow."""
    parts = max(1, parts)
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def plan_batches(study: Study, tune_run_id: str, parallel: int, tasks: int) -> list[TuneBatch]:
    """``parallel`` processes in all, spread over ``tasks`` KFP tasks; empty batches (more
    tasks than trials) are dropped, but one batch always remains for the loop to run."""
    tasks = max(1, min(tasks, parallel))
    per_task = split(max(1, parallel), tasks)
    trials = split(study.remaining, tasks)
    batches = [TuneBatch(index=i, trials=n, processes=min(p, n) or 1, study=study.name,
                         storage=study.storage, tune_run_id=tune_run_id,
                         space=study.space.model_dump_json(), base=study.base.model_dump_json())
               for i, (n, p) in enumerate(zip(trials, per_task, strict=True)) if n or i == 0]
    return batches


def batch_study(batch: TuneBatch, data_dir: Path) -> Study:
    """The study a batch belongs to, as tune-study prepared it: the space and the model
    were checked there, so only the objective is read again (from the data's task)."""
    space = SearchSpace.model_validate_json(batch.space)
    metric, direction = space.resolved_objective(read_metadata(data_dir).task.value)
    return Study(space, TrainConfig.model_validate_json(batch.base), batch.study,
                 batch.storage, metric, direction, batch.trials)


def run_batch(batch: TuneBatch, data_dir: Path) -> None:
    """Run the batch's trials: in this process, or in ``batch.processes`` supervised ones
    (one failing stops the others; Ctrl-C or SIGTERM stops them all)."""
    shares = split(batch.trials, batch.processes)
    if batch.processes <= 1:
        run_trials(batch_study(batch, data_dir), data_dir, batch.trials,
                   worker=batch.index * 1000, parent_run_id=batch.tune_run_id)
        return
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = {f"trial worker {i}": spawn(
        [sys.executable, "-m", WORKER_MODULE, "--batch", batch.model_dump_json(),
         "--data", str(data_dir), "--worker", str(batch.index * 1000 + i), "--trials", str(n)],
        env) for i, n in enumerate(shares) if n}
    supervise(procs, "tune {name} {how}; stopped the other trial workers (a rerun "
                     "continues the study)")


def main(argv: list[str] | None = None) -> None:
    """One trial worker process of a batch."""
    parser = argparse.ArgumentParser(description="One twinflow trial worker.")
    parser.add_argument("--batch", required=True, help="TuneBatch as JSON")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--trials", type=int, required=True)
    args = parser.parse_args(argv)
    die_with_parent(signal.SIGKILL)  # the trial task, if it dies without stopping us
    configure_logging()
    batch = TuneBatch.model_validate_json(args.batch)
    run_trials(batch_study(batch, args.data), args.data, args.trials, worker=args.worker,
               parent_run_id=batch.tune_run_id)


if __name__ == "__main__":
    main()
