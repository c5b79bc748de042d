"""Image folders: one sub-folder per class, every image a row of channels-last pixels.

A folder that holds no images would otherwise fail far from its cause (a bare
``StopIteration`` from the first-image probe, or "no label column" when the folder
is read as tables), so every such path raises :func:`no_images_error`, which says
what was looked for and how the folder must be laid out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from components.errors import DataError

if TYPE_CHECKING:  # readers imports this module; BadRows is only a type here
    from components.data.readers import BadRows

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_layout(root: Path) -> str:
    """What was looked for and how an image folder must look, for error messages."""
    looked = ", ".join(f"*{s}" for s in IMAGE_SUFFIXES)
    return f"looked for {looked}; images go in one sub-folder per class, e.g. {root / 'cat'}/1.png"


def class_folders(root: Path) -> list[Path]:
    """The class sub-folders of ``root`` (hidden ones, e.g. .ipynb_checkpoints, are not)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_image(path: Path) -> bool:
    """Whether ``path`` has an image suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(root: Path) -> Iterator[tuple[Path, str]]:
    """(image file, class name) in a stable order: class folders, then files, sorted."""
    for cls in class_folders(root):
        for file in sorted(cls.iterdir()):
            if is_image(file):
                yield file, cls.name


def no_images_error(root: Path) -> DataError:
    """The folder has no image in a class sub-folder: say what was looked for, and
    where images that are there (loose in ``root``, or a level deeper) should go."""
    loose = [p.name for p in root.iterdir() if is_image(p)] if root.is_dir() else []
    if loose:
        return DataError(f"{root}: found {len(loose)} images directly in it (e.g. {loose[0]}) "
                         "but no class sub-folder; images go in one sub-folder per class, "
                         f"e.g. {root / 'cat'}/1.png")
    deeper = next((c for c in class_folders(root) if next(image_files(c), None)), None) \
        if root.is_dir() else None
    hint = f"; {deeper} holds class sub-folders of images: pass that as --data" if deeper else ""
    return DataError(f"{root}: no images found ({image_layout(root)}){hint}")


def require_images(root: Path) -> None:
    """Fail with :func:`no_images_error` unless a class sub-folder holds an image."""
    if next(image_files(root), None) is None:
        raise no_images_error(root)


def folder_image_shape(root: Path) -> list[int]:
    """Height, width, channels of the first image (every image must share them)."""
    from PIL import Image, UnidentifiedImageError

    first = next(image_files(root), None)
    if first is None:
        raise no_images_error(root)
    try:
        with Image.open(first[0]) as img:
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{first[0]}: not a readable image: {err}") from None
    return [arr.shape[0], arr.shape[1], arr.shape[2] if arr.ndim == 3 else 1]


def pixels_batch(pixels: np.ndarray, labels: list[str], label: str) -> pa.RecordBatch:
    """Images (n, h, w[, c]) as a batch of float pixel columns ``px<i>`` and the label."""
    flat = pixels.reshape(len(pixels), -1).astype(np.float64)
    arrays = [pa.array(flat[:, i]) for i in range(flat.shape[1])]
    names = [f"px{i}" for i in range(flat.shape[1])]
    return pa.RecordBatch.from_arrays([*arrays, pa.array(labels)], names=[*names, label])


def image_batches(path: str, *, label: str, batch_rows: int, bad: BadRows,
                  **_: object) -> Iterator[pa.RecordBatch]:
    """One sub-folder per class; every image must have the first image's shape."""
    from PIL import Image, UnidentifiedImageError

    shape = folder_image_shape(Path(path))
    pixels: list[np.ndarray] = []
    labels: list[str] = []
    for file, cls in image_files(Path(path)):
        try:
            with Image.open(file) as img:
                arr = np.asarray(img)
        except (UnidentifiedImageError, OSError) as err:
            bad.reject(str(file), None, f"not a readable image: {err}")
            continue
        arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
        if list(arr.shape) != shape:
            bad.reject(str(file), None, f"image shape {list(arr.shape)} differs from {shape}")
            continue
        pixels.append(arr)
        labels.append(cls)
        if len(pixels) >= batch_rows:
            yield pixels_batch(np.stack(pixels), labels, label)
            pixels, labels = [], []
    if pixels:
        yield pixels_batch(np.stack(pixels), labels, label)
