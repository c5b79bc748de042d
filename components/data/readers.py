"""Streaming readers: every input format becomes a stream of Arrow record batches.

Each reader yields ``pyarrow.RecordBatch`` objects of at most ``batch_rows``
rows, so memory stays flat however large the file is. CSV goes through
pyarrow's streaming CSV reader (multi-threaded C++ parsing, the throughput
floor for the ingest); Parquet through ``ParquetFile.iter_batches``; JSON Lines
through ``pyarrow.json.open_json``; TFRecord via Beam's own TFRecord codec and
tf.train.Example protos; image folders via Pillow; MNIST IDX via numpy memory
maps. Errors name the file and, where it applies, the line. The CSV reader
(components.data.csv_reader) and image folders (components.data.image_reader)
have modules of their own.
"""

from __future__ import annotations

import gzip
import io
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from components.config import CsvOptions
from components.data.csv_reader import (
    BYTES_PER_ROW,
    MIN_BLOCK,
    STRADDLE,
    csv_batches,
    long_row_error,
    row_limit,
)
from components.data.image_reader import (
    class_folders,
    folder_image_shape,
    image_batches,
    image_layout,
    is_image,
    pixels_batch,
    require_images,
)
from components.errors import DataError

log = logging.getLogger(__name__)
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet",
                   ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
                   ".tfrecord": "tfrecord", ".tfrecords": "tfrecord"}


@dataclass
class BadRows:
    """Rows rejected in ``skip`` mode: a count and a small sample (file, line, reason)."""

    skip: bool
    count: int = 0
    sample: list[dict[str, str]] = field(default_factory=list)
    parser_skipped: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def line_of(self, row_line: int) -> int:
        """Physical line of a row counted among delivered rows (parser-skipped lines added).

        Quoted fields spanning lines are not accounted for.
        """
        for skipped in sorted(self.parser_skipped):
            if skipped <= row_line:
                row_line += 1
        return row_line

    def reject(self, path: str, line: int | None, reason: str, text: str = "") -> None:
        """Record one bad row, or raise if bad rows are fatal (thread-safe: the parser
        reports rows while the previous batch is being checked)."""
        where = f"{path}: line {line}" if line else path
        if not self.skip:
            raise DataError(f"{where}: {reason}")
        with self._lock:
            self.count += 1
            if len(self.sample) < 20:
                self.sample.append({"file": path, "line": str(line or ""), "reason": reason,
                                    "text": text[:200]})


def detect_format(path: Path) -> str:
    """The format of a file or folder from its name (folders of class folders = images)."""
    if path.is_dir():
        return "images"
    if "idx3-ubyte" in path.name:
        return "idx"
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unsupported file type '{path.suffix}' (use .csv, .parquet, "
                        ".jsonl, .tfrecord, an MNIST idx3-ubyte file or a folder of images)")
    return fmt


def list_files(source: str, fmt: str) -> tuple[list[str], str]:
    """The input files of ``source`` (a file, a glob, or a folder of files) and their format."""
    path = Path(source)
    if any(c in source for c in "*?["):
        files = sorted(str(p) for p in Path(path.anchor or ".").glob(
            str(path.relative_to(path.anchor)) if path.anchor else source))
        if not files:
            raise DataError(f"{source}: no files match")
        return files, fmt if fmt != "auto" else detect_format(Path(files[0]))
    if not path.exists():
        raise DataError(f"{source}: data file not found")
    if path.is_dir() and (fmt == "images" or (fmt == "auto" and class_folders(path))):
        require_images(path)
        return [source], "images"
    if path.is_dir():
        files = _folder_files(path)
        return files, fmt if fmt != "auto" else _folder_format(path, files)
    return [source], fmt if fmt != "auto" else detect_format(path)


def _folder_files(path: Path) -> list[str]:
    """The data files of a folder without class sub-folders (hidden files are not)."""
    files = sorted(str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{path}: folder holds no data files, and no images "
                        f"({image_layout(path)})")
    return files


def _folder_format(path: Path, files: list[str]) -> str:
    """The format of a folder's (first) file; an image there is one not in a class folder."""
    if is_image(Path(files[0])):
        require_images(path)  # raises: there is no class folder, so no image in one
    return detect_format(Path(files[0]))


def read_batches(path: str, fmt: str, label: str, options: CsvOptions, batch_rows: int,
                 types: dict[str, pa.DataType] | None, bad: BadRows) -> Iterator[pa.RecordBatch]:
    """Stream one input file (or image folder) as record batches."""
    readers: dict[str, Callable[..., Iterator[pa.RecordBatch]]] = {
        "csv": csv_batches, "parquet": _parquet_batches, "jsonl": _json_batches,
        "tfrecord": _tfrecord_batches, "images": image_batches, "idx": _idx_batches}
    if fmt not in readers:
        raise DataError(f"{path}: unknown format '{fmt}'")
    p = Path(path)
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    for batch in readers[fmt](path, label=label, options=options, batch_rows=batch_rows,
                              types=types, bad=bad):
        check_unique_columns(batch.schema, path, fmt)
        yield batch


def check_unique_columns(schema: pa.Schema, path: str, fmt: str) -> None:
    """Two columns of one name make every later lookup ambiguous (pyarrow raises a bare
    KeyError deep in the pipeline); name the column and where it is instead."""
    counts = Counter(schema.names)
    twice = [name for name, n in counts.items() if n > 1]
    if not twice:
        return
    name = twice[0]
    positions = [str(i + 1) for i, column in enumerate(schema.names) if column == name]
    where = f"{path}: line 1" if fmt == "csv" else path
    raise DataError(f"{where}: column '{name}' appears {counts[name]} times (columns "
                    f"{', '.join(positions)}); give each column its own name or drop the copy")


def _parquet_batches(path: str, *, batch_rows: int, **_: object) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    try:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: cannot be read as Parquet: {err}") from None


def _json_batches(path: str, *, options: CsvOptions, batch_rows: int,
                  **_: object) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as pajson

    block = max(MIN_BLOCK, batch_rows * BYTES_PER_ROW, row_limit(options))
    try:
        reader = pajson.open_json(path, read_options=pajson.ReadOptions(block_size=block))
        yield from reader
    except pa.ArrowInvalid as err:
        if STRADDLE in str(err):
            raise long_row_error(path, block) from None
        raise DataError(f"{path}: cannot be read as JSON Lines: {err}") from None


def _tfrecord_batches(path: str, *, batch_rows: int, bad: BadRows,
                      **_: object) -> Iterator[pa.RecordBatch]:
    """tf.train.Example records; a feature of n values becomes n columns ``name_i``."""
    from apache_beam.io.tfrecordio import _TFRecordUtil
    from tensorflow.core.example import example_pb2

    rows: list[dict[str, object]] = []
    with open(path, "rb") as fh:
        for number in range(1, 1 << 62):
            try:
                record = _TFRecordUtil.read_record(fh)
            except ValueError as err:
                raise DataError(f"{path}: record {number}: corrupt TFRecord: {err}") from None
            if record is None:
                break
            rows.append(_example_row(example_pb2.Example.FromString(record)))
            if len(rows) >= batch_rows:
                yield pa.RecordBatch.from_pylist(rows)
                rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows)


def _example_row(example: object) -> dict[str, object]:
    row: dict[str, object] = {}
    for name, feat in example.features.feature.items():  # type: ignore[attr-defined]
        kind = feat.WhichOneof("kind")
        values = list(getattr(feat, kind).value) if kind else []
        values = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
        if len(values) == 1:
            row[name] = values[0]
        else:
            row.update({f"{name}_{i}": v for i, v in enumerate(values)})
    return row


def image_shape(path: str, fmt: str) -> list[int] | None:
    """Height, width, channels of an image source (None for tabular formats)."""
    if fmt == "idx":
        dims = _idx_array(Path(path)).shape
        return [int(dims[1]), int(dims[2]), 1]
    if fmt == "images":
        return folder_image_shape(Path(path))
    return None


def _idx_array(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic, dims, then big-endian data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise DataError(f"{path}: unknown IDX data type 0x{data[2]:02x}")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = io.BytesIO(data[4 + 4 * ndim:]).getbuffer()
    expected = int(np.prod(dims)) * np.dtype(dtypes[data[2]]).itemsize
    if len(body) != expected:
        raise DataError(f"{path}: IDX header says {dims} but the file holds {len(body)} "
                        f"data bytes, expected {expected}")
    return np.frombuffer(body, dtype=dtypes[data[2]]).reshape(dims)


def idx_labels_path(images: Path) -> Path:
    """MNIST naming: ``*-images-idx3-ubyte`` pairs with ``*-labels-idx1-ubyte``."""
    return images.with_name(images.name.replace("images", "labels").replace("idx3", "idx1"))


def _idx_batches(path: str, *, label: str, batch_rows: int,
                 **_: object) -> Iterator[pa.RecordBatch]:
    images = _idx_array(Path(path))
    labels_file = idx_labels_path(Path(path))
    if not labels_file.is_file():
        raise DataError(f"{path}: labels file {labels_file.name} not found beside it")
    labels = _idx_array(labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{path}: {images.shape} images do not match {labels.shape} labels "
                        f"in {labels_file.name}")
    for start in range(0, len(images), batch_rows):
        chunk = slice(start, start + batch_rows)
        yield pixels_batch(images[chunk], [str(v) for v in labels[chunk]], label)
