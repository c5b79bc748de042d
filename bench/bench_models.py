"""Issue 14 figures ("Your model, your task"), each against a baseline measured in the
same run:

- ``resnet``: the zoo's ``resnet`` on a generated 32x32 RGB image set (a folder of
  PNGs per class, read by the real ingest step), trained through the real train
  step (``run_train`` in an MLflow run) per framework, against the same network
  in the plain hand-written loop on the same splits: test accuracy and train
  samples/s of each.
- ``quality``: test accuracy of twinflow's trainer against the plain loop of the
  same network on the same splits, over several training seeds, for the built-in
  ``mlp`` and a user's model file (the residual MLP of bench/common.py) on
  digits; mean, std, min and max per framework. Twinflow runs with its defaults
  (10 epochs, batch 32, Adam 1e-3); the plain loop takes the same values from
  the same config, and the same seed for the init (checked: "same init").

Why a plain loop as the baseline: the question a user asks is whether handing the
network to twinflow costs speed or accuracy compared with the loop they would
have written themselves.

Usage: .venv/bin/python bench/bench_models.py [--sections resnet quality]
       [--per-class 150] [--resnet-options '{}'] [--seeds 0 1 2 3 4]
Prints Markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
from common import (
    accuracy,
    plain_builder,
    plain_fit,
    prepare,
    same_init,
    splits,
    spread,
    twinflow_fit,
    user_model_fields,
    write_user_model,
)

from components.config import TrainConfig
from components.data.dataset import read_metadata
from components.frameworks import get_adapter
from components.train.core import run_train
from components.train.model import model_spec
from components.train.worker import read_history

FRAMEWORKS = ("torch", "tensorflow")
SIZE = 32


def _pattern(kind: int, rng: np.random.Generator) -> np.ndarray:
    """A 32x32 two-level pattern of class ``kind`` with a random frequency and phase
    (and centre, for rings): stripes that are horizontal, vertical, diagonal, or rings.
    Random phase and colours mean no pixel alone tells the class: a model has to
    see shapes."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    freq, phase = rng.uniform(2.0, 4.0), rng.uniform()
    if kind == 0:
        wave = yy
    elif kind == 1:
        wave = xx
    elif kind == 2:
        wave = (xx + yy) / np.sqrt(2)
    else:
        cy, cx = rng.uniform(0.3, 0.7, 2)
        wave = np.hypot(yy - cy, xx - cx)
    return np.sin(2 * np.pi * (freq * wave + phase)) > 0


def write_images(root: Path, per_class: int, noise: float, seed: int = 0) -> Path:
    """A folder per class of RGB PNGs: the pattern in a random foreground colour on a
    random background colour, plus Gaussian noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for kind, name in enumerate(("horizontal", "vertical", "diagonal", "rings")):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            mask = _pattern(kind, rng)[..., None]
            fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
            img = np.where(mask, fg, bg) + rng.normal(0, noise, (SIZE, SIZE, 3))
            pixels = (np.clip(img, 0, 1) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def twinflow_step(fw: str, config: TrainConfig, data: Path, out: Path) -> dict[str, float]:
    """The real train step (MLflow run, model check, checkpoints, save, raw-input
    model): test accuracy, samples/s over the epochs alone and as the step logs it."""
    with mlflow.start_run():
        result = run_train(config, data, out)
    _, _, test = splits(data)
    epoch_seconds = sum(m.seconds for m in read_history(out))
    rows = len(splits(data)[0])
    return {"acc": accuracy(fw, get_adapter(fw).load_model(out), test),
            "rate": rows * len(read_history(out)) / epoch_seconds,
            "step_rate": result.samples_per_second}


def plain_run(fw: str, config: TrainConfig, data: Path) -> dict[str, float]:
    """The same network in the plain loop, same epochs, batch, learning rate and seed."""
    tr, _, test = splits(data)
    spec = model_spec(config, read_metadata(data))
    model, seconds = plain_fit(fw, plain_builder(fw, spec), tr, config.epochs,
                               config.batch_size, config.learning_rate, config.seed)
    return {"acc": accuracy(fw, model, test), "rate": len(tr) * config.epochs / seconds}


def resnet_section(tmp: Path, args: argparse.Namespace) -> None:
    """Figure 2: resnet on generated 32x32 RGB images, twinflow against the plain loop."""
    images = write_images(tmp / "images", args.per_class, args.noise)
    start = time.perf_counter()
    data = prepare(tmp / "resnet", str(images))
    meta = read_metadata(data)
    print(f"\nimages: {4 * args.per_class} PNGs {meta.image_shape}, {len(meta.classes)} "
          f"classes (chance {1 / len(meta.classes):.0%}), split {meta.rows}; ingest + "
          f"transform {time.perf_counter() - start:.1f} s; resnet options "
          f"{args.resnet_options}, {args.epochs} epochs\n")
    print("| framework | twinflow test acc | plain loop test acc | twinflow samples/s "
          "(epochs) | twinflow samples/s (whole step) | plain loop samples/s | "
          "ratio (epochs) |")
    print("|---|---|---|---|---|---|---|")
    for fw in FRAMEWORKS:
        config = TrainConfig(framework=fw, epochs=args.epochs, show_progress=False,
                             model_ref="resnet", model_options=args.resnet_options)
        ours, base = [], []
        for repeat in range(args.repeats):  # interleaved
            ours.append(twinflow_step(fw, config, data, tmp / f"model-{fw}-{repeat}"))
            base.append(plain_run(fw, config, data))
        o = {k: statistics.median(r[k] for r in ours) for k in ours[0]}
        b = {k: statistics.median(r[k] for r in base) for k in base[0]}
        print(f"| {fw} | {o['acc']:.1%} | {b['acc']:.1%} | {o['rate']:,.1f} | "
              f"{o['step_rate']:,.1f} | {b['rate']:,.1f} | {o['rate'] / b['rate']:.2f}x |",
              flush=True)


def quality_section(tmp: Path, args: argparse.Namespace) -> None:
    """Figure 3: test accuracy over seeds, twinflow against the plain loop, for the
    built-in mlp and the user's file, on the same digits splits."""
    data = prepare(tmp / "digits")
    user_file = write_user_model(tmp)
    meta = read_metadata(data)
    print(f"\ndigits split {meta.rows} (ingest seed 42, the same for every run); "
          f"training seeds {args.seeds}; test accuracy in %: mean ± std [min, max]\n")
    print("| model | framework | twinflow | plain loop | twinflow - plain (mean) | "
          "same init | goal (>= -0.5) |")
    print("|---|---|---|---|---|---|---|")
    models: list[tuple[str, dict[str, str], Path | None]] = [
        ("mlp (built-in)", {"model_ref": "mlp"}, None),
        (f"{user_file.name} (user file)", user_model_fields(user_file), user_file)]
    for label, fields, file in models:
        for fw in FRAMEWORKS:
            ours, base, init = [], [], []
            for seed in args.seeds:  # interleaved
                config = TrainConfig(framework=fw, seed=seed, show_progress=False, **fields)
                spec = model_spec(config, meta)
                build = plain_builder(fw, spec, file)
                init.append(same_init(fw, spec, build, seed))
                model, _ = twinflow_fit(config, data)
                ours.append(accuracy(fw, model, splits(data)[2]))
                model, _ = plain_fit(fw, build, splits(data)[0], config.epochs,
                                     config.batch_size, config.learning_rate, seed)
                base.append(accuracy(fw, model, splits(data)[2]))
            diff = 100 * (statistics.mean(ours) - statistics.mean(base))
            print(f"| {label} | {fw} | {spread(ours)} | {spread(base)} | {diff:+.2f} | "
                  f"{'yes' if all(init) else 'NO'} | {'met' if diff >= -0.5 else 'missed'} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sections", nargs="+", default=["resnet", "quality"])
    parser.add_argument("--per-class", type=int, default=150, help="images per class")
    parser.add_argument("--noise", type=float, default=0.2, help="pixel noise std (0-1 scale)")
    parser.add_argument("--epochs", type=int, default=10, help="resnet epochs")
    parser.add_argument("--resnet-options", default="{}", help="resnet builder options, JSON")
    parser.add_argument("--repeats", type=int, default=1, help="resnet runs per side")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    json.loads(args.resnet_options)  # fail before the minutes of work, not after
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        if "resnet" in args.sections:
            resnet_section(Path(tmp), args)
        if "quality" in args.sections:
            quality_section(Path(tmp), args)


if __name__ == "__main__":
    main()
