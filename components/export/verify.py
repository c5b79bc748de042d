"""Reload every export of a directory in a fresh process and compare its predictions.

A file that loads in the process that wrote it can still fail elsewhere (a
missing custom op, weights left in memory, a signature that needs the Python
object). So the check runs ``python -m components.export.verify`` in a new
interpreter, which loads each entry with :func:`load_predictor` and writes its
outputs to ``.npy`` files; the caller compares them with the in-memory model.
A raw-input entry (components.export.raw) is fed ``raw_rows`` instead and
answers probabilities, so its reference is the in-memory model's probabilities
on those rows after the fitted transform.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from components.errors import DataError
from components.export.manifest import ExportManifest

log = logging.getLogger(__name__)
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_TIMEOUT_S = 600
_STARTED = "twinflow-verify: loading "


def verify_exports(directory: Path, references: dict[str, np.ndarray], x: np.ndarray,
                   atol: float = 1e-3, raw_rows: pd.DataFrame | None = None) -> dict[str, float]:
    """Check each entry named in ``references`` against its in-memory predictions.

    Returns the largest absolute difference per entry; raises DataError naming
    the entry and format whose reloaded predictions differ or fail to load.
    """
    manifest = ExportManifest.load(directory)
    unknown = sorted(set(references) - set(manifest.entries))
    if unknown:
        raise DataError(f"{directory}: no exports named {unknown}")
    raw = [n for n in references if manifest.entries[n].input == "raw"]
    if raw and raw_rows is None:
        raise DataError(f"{directory}: raw-input exports {raw} need raw rows to verify")
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        inputs = Path(tmp) / "x.npy"
        np.save(inputs, np.ascontiguousarray(x, np.float32))
        if raw_rows is not None:
            raw_rows.to_parquet(Path(tmp) / "raw.parquet")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        done = subprocess.run(
            [sys.executable, "-m", "components.export.verify", str(directory), str(inputs), tmp,
             *references], env=env, capture_output=True, text=True, timeout=_TIMEOUT_S,
            check=False)
        if done.returncode != 0:
            raise DataError(f"{directory}: reloading the exports in a fresh process failed"
                            f"{_where(done.stderr)}: {_last_line(done.stderr, done.returncode)}")
        return {name: _compare(manifest, name, np.load(Path(tmp) / f"{name}.npy"), ref, atol)
                for name, ref in references.items()}


def _where(stderr: str) -> str:
    """Name the entry the child was loading when it died (its last ``verifying`` line)."""
    started = [line.split(_STARTED, 1)[1].strip() for line in stderr.splitlines()
               if _STARTED in line]
    return f" at export '{started[-1]}'" if started else ""


def _last_line(stderr: str, code: int) -> str:
    lines = [line for line in stderr.strip().splitlines() if _STARTED not in line]
    return lines[-1] if lines else f"exit code {code}"


def _compare(manifest: ExportManifest, name: str, got: np.ndarray, want: np.ndarray,
             atol: float) -> float:
    entry = manifest.entries[name]
    if got.shape != want.shape:
        raise DataError(f"export '{name}' ({entry.format}, {entry.path}): reloaded output shape "
                        f"{got.shape} differs from the in-memory model's {want.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    if diff > atol:
        raise DataError(f"export '{name}' ({entry.format}, {entry.path}): reloaded predictions "
                        f"differ from the in-memory model's by up to {diff:.3g} (> {atol:g})")
    log.info("export %s (%s) reloaded in a fresh process: max |diff| %.3g", name,
             entry.format, diff)
    return diff


def _main(argv: list[str]) -> None:
    """Child side: ``directory inputs.npy out_dir name...`` (raw rows: ``out_dir/raw.parquet``)."""
    from components.export.raw_runtime import load_raw_predictor
    from components.export.runtime import load_predictor

    directory, inputs, out_dir, names = Path(argv[0]), Path(argv[1]), Path(argv[2]), argv[3:]
    manifest = ExportManifest.load(directory)
    x = np.load(inputs)
    for name in names:
        entry = manifest.entries[name]
        sys.stderr.write(f"{_STARTED}{name}\n")
        sys.stderr.flush()
        try:
            if entry.input == "raw":
                rows = pd.read_parquet(out_dir / "raw.parquet")
                out = load_raw_predictor(entry.format, directory / entry.path,
                                         manifest.output)(rows)
            else:
                out = load_predictor(entry.format, directory / entry.path)(x)
        except Exception as err:
            raise DataError(f"export '{name}' ({entry.format}, {entry.path}) failed to load or "
                            f"run: {err}") from err
        np.save(out_dir / f"{name}.npy", out)


if __name__ == "__main__":
    _main(sys.argv[1:])
    # Every output is on disk. Skip interpreter teardown: the runtimes' thread
    # pools (TensorFlow, onnxruntime) can abort in their static destructors
    # ("terminate called without an active exception") after the work is done,
    # which would fail a check whose answers were all written.
    sys.stderr.flush()
    os._exit(0)
