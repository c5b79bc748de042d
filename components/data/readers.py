"""Streaming readers: every input format becomes a stream of Arrow record batches.

Each reader yields ``pyarrow.RecordBatch`` objects of at most ``batch_rows``
rows, so memory stays flat however large the file is. CSV goes through
pyarrow's streaming CSV reader (multi-threaded C++ parsing, the throughput
floor for the ingest); Parquet through ``ParquetFile.iter_batches``; JSON Lines
through ``pyarrow.json.open_json``; TFRecord via Beam's own TFRecord codec and
tf.train.Example protos; image folders via Pillow; MNIST IDX via numpy memory
maps. Errors name the file and, where it applies, the line.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from components.config import CsvOptions
from components.errors import DataError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# pyarrow's streaming CSV reader reads blocks ahead of the consumer: with 4-16 MiB
# blocks it held a whole 148 MB file in memory (measured); with 1 MiB blocks the
# read-ahead stayed under 40 MiB whatever the file size. Small blocks are then
# joined into batches of ``batch_rows`` rows (see :func:`rebatch`).
_CSV_BLOCK = 1 << 20  # at most; smaller for small batch_rows (type inference sees one block)
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
    if path.is_dir() and fmt in ("auto", "images") and _is_image_folder(path):
        return [source], "images"
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"{source}: folder holds no data files")
        return files, fmt if fmt != "auto" else detect_format(Path(files[0]))
    return [source], fmt if fmt != "auto" else detect_format(path)


def _is_image_folder(path: Path) -> bool:
    return any(p.is_dir() for p in path.iterdir())


def read_batches(path: str, fmt: str, label: str, options: CsvOptions, batch_rows: int,
                 types: dict[str, pa.DataType] | None, bad: BadRows) -> Iterator[pa.RecordBatch]:
    """Stream one input file (or image folder) as record batches."""
    readers: dict[str, Callable[..., Iterator[pa.RecordBatch]]] = {
        "csv": _csv_batches, "parquet": _parquet_batches, "jsonl": _json_batches,
        "tfrecord": _tfrecord_batches, "images": _image_batches, "idx": _idx_batches}
    if fmt not in readers:
        raise DataError(f"{path}: unknown format '{fmt}'")
    p = Path(path)
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    yield from readers[fmt](path, label=label, options=options, batch_rows=batch_rows,
                            types=types, bad=bad)


def _csv_batches(path: str, *, options: CsvOptions, batch_rows: int,
                 types: dict[str, pa.DataType] | None, bad: BadRows,
                 **_: object) -> Iterator[pa.RecordBatch]:
    _check_encoding_bom(path, options)

    failed: list[DataError] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        """Called by pyarrow's parser; exceptions raised here would be swallowed."""
        line = _find_line(path, options, lambda n, text: text == row.text
                          and n not in bad.parser_skipped)
        try:
            bad.reject(path, line, f"expected {row.expected_columns} fields, "
                                   f"got {row.actual_columns}", row.text)
            bad.parser_skipped.append(line or 0)
        except DataError as err:
            failed.append(err)
            return "error"
        return "skip"

    block = max(1 << 14, min(batch_rows * 64, _CSV_BLOCK))
    read = pacsv.ReadOptions(encoding=options.encoding, block_size=block,
                             autogenerate_column_names=not options.header)
    parse = pacsv.ParseOptions(delimiter=options.delimiter, quote_char=options.quotechar,
                               invalid_row_handler=on_invalid)
    convert = pacsv.ConvertOptions(column_types=types or {}, strings_can_be_null=True)
    try:
        reader = pacsv.open_csv(path, read_options=read, parse_options=parse,
                                convert_options=convert)
        yield from rebatch(_check_utf8(reader, path, options), batch_rows)
    except DataError:
        raise
    except pa.ArrowInvalid as err:
        raise (failed[0] if failed else _csv_error(path, options, err)) from None
    except (UnicodeDecodeError, LookupError) as err:
        raise DataError(f"{path}: cannot be decoded as {options.encoding}: {err}") from None


def rebatch(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Join small batches into ones of about ``rows`` rows (one batch in memory at a time)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
            pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _check_utf8(reader: pacsv.CSVStreamingReader, path: str,
                options: CsvOptions) -> Iterator[pa.RecordBatch]:
    """pyarrow reads invalid UTF-8 as binary; report the first such line instead."""
    binary = [f.name for f in reader.schema if pa.types.is_binary(f.type)]
    if binary:
        line = _find_line(path, options, lambda _n, _t: False)
        raise DataError(f"{path}: line {line}: not valid {options.encoding} text "
                        f"(column '{binary[0]}'); set the CSV encoding")
    yield from reader


def _check_encoding_bom(path: str, options: CsvOptions) -> None:
    """A UTF-8 BOM is skipped by pyarrow; a UTF-16/32 BOM means the encoding is wrong."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") and not options.encoding.lower().startswith(
            ("utf-16", "utf16", "utf-32", "utf32")):
        raise DataError(f"{path}: starts with a UTF-16/32 byte-order mark; "
                        "set the CSV encoding (e.g. utf-16)")


def _find_line(path: str, options: CsvOptions, match: Callable[[int, str], bool]) -> int | None:
    """Slow path, errors only: the physical line of the first row matching ``match``.

    Also stops at the first line that is not valid text in the file's encoding.
    """
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode(options.encoding).rstrip("\r\n").lstrip("\ufeff")
            except UnicodeDecodeError:
                return number
            if match(number, text):
                return number
    return None


def _csv_error(path: str, options: CsvOptions, err: pa.ArrowInvalid) -> DataError:
    """Turn a pyarrow CSV error into one naming the file, line and column."""
    message = str(err)
    if "Empty CSV file" in message:
        return DataError(f"{path}: file is empty")
    if "conversion error" in message and "invalid value" in message:
        value = message.rsplit("invalid value ", 1)[1].strip("'")
        column = _column_of(path, options, message)
        index = _header(path, options).index(column) if column in _header(path, options) else -1

        def has_value(number: int, text: str) -> bool:
            fields = next(csv.reader([text], delimiter=options.delimiter,
                                     quotechar=options.quotechar), [])
            return number > 1 and 0 <= index < len(fields) and fields[index] == value

        line = _find_line(path, options, has_value)
        return DataError(f"{path}: line {line}: column '{column}': wrong type: "
                         f"value '{value}' is not a number")
    return DataError(f"{path}: cannot be read: {message}")


def _header(path: str, options: CsvOptions) -> list[str]:
    with open(path, encoding=options.encoding, errors="replace", newline="") as fh:
        row = next(csv.reader(fh, delimiter=options.delimiter, quotechar=options.quotechar), [])
    names = [c.lstrip("\ufeff") for c in row]
    return names if options.header else [f"f{i}" for i in range(len(names))]


def _column_of(path: str, options: CsvOptions, message: str) -> str:
    try:
        index = int(message.split("column #", 1)[1].split(":", 1)[0])
        return _header(path, options)[index]
    except (IndexError, ValueError):
        return "?"


def _parquet_batches(path: str, *, batch_rows: int, **_: object) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    try:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: cannot be read as Parquet: {err}") from None


def _json_batches(path: str, *, batch_rows: int, **_: object) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as pajson

    try:
        reader = pajson.open_json(path, read_options=pajson.ReadOptions(
            block_size=max(1 << 14, batch_rows * 64)))
        yield from reader
    except pa.ArrowInvalid as err:
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


def _pixels_batch(pixels: np.ndarray, labels: list[str], label: str) -> pa.RecordBatch:
    flat = pixels.reshape(len(pixels), -1).astype(np.float64)
    arrays = [pa.array(flat[:, i]) for i in range(flat.shape[1])]
    names = [f"px{i}" for i in range(flat.shape[1])]
    return pa.RecordBatch.from_arrays([*arrays, pa.array(labels)], names=[*names, label])


def image_shape(path: str, fmt: str) -> list[int] | None:
    """Height, width, channels of an image source (None for tabular formats)."""
    if fmt == "idx":
        dims = _idx_array(Path(path)).shape
        return [int(dims[1]), int(dims[2]), 1]
    if fmt == "images":
        from PIL import Image

        first = next(iter(_image_files(Path(path))))[0]
        with Image.open(first) as img:
            arr = np.asarray(img)
        return [arr.shape[0], arr.shape[1], arr.shape[2] if arr.ndim == 3 else 1]
    return None


def _image_files(root: Path) -> Iterator[tuple[Path, str]]:
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(cls.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                yield file, cls.name


def _image_batches(path: str, *, label: str, batch_rows: int, bad: BadRows,
                   **_: object) -> Iterator[pa.RecordBatch]:
    """One sub-folder per class; every image must have the first image's shape."""
    from PIL import Image, UnidentifiedImageError

    shape = image_shape(path, "images")
    pixels: list[np.ndarray] = []
    labels: list[str] = []
    for file, cls in _image_files(Path(path)):
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
            yield _pixels_batch(np.stack(pixels), labels, label)
            pixels, labels = [], []
    if pixels:
        yield _pixels_batch(np.stack(pixels), labels, label)


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
        yield _pixels_batch(images[chunk], [str(v) for v in labels[chunk]], label)
