"""The CSV reader: pyarrow's streaming parser, with errors that name the file and line.

pyarrow parses in blocks of ``block_size`` bytes, and a row must fit in one block:
a longer one fails with pyarrow's "straddling object straddles two block boundaries",
which names neither the line nor a way out. :func:`long_row_error` finds the line
and names the option that raises the block (``csv.max_row_bytes``). The JSON Lines
reader (same parser design) shares it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.csv as pacsv

from components.config import CsvOptions
from components.errors import DataError

if TYPE_CHECKING:  # readers imports this module; BadRows is only a type here
    from components.data.readers import BadRows

# pyarrow's streaming CSV reader reads blocks ahead of the consumer: with 4-16 MiB
# blocks it held a whole 148 MB file in memory (measured); with 1 MiB blocks the
# read-ahead stayed under 40 MiB whatever the file size. Small blocks are then
# joined into batches of ``batch_rows`` rows (see :func:`rebatch`).
CSV_BLOCK = 1 << 20  # at most; smaller for small batch_rows (type inference sees one block)
MIN_BLOCK = 1 << 14
BYTES_PER_ROW = 64  # the block is about this many bytes for each row of a batch
#: pyarrow's message for a row longer than the block (CSV and JSON Lines alike).
STRADDLE = "straddling object straddles two block boundaries"
#: The option that raises the block, as the user writes it (see :func:`row_limit`).
ROW_LIMIT_OPTION = "max_row_bytes"


def row_limit(options: CsvOptions) -> int:
    """The user's floor for the block size (``csv.max_row_bytes``; 0 = none)."""
    return options.max_row_bytes


def block_bytes(batch_rows: int, options: CsvOptions) -> int:
    """pyarrow's block size: about ``BYTES_PER_ROW`` a row of a batch, between
    ``MIN_BLOCK`` and ``CSV_BLOCK`` (memory), raised to the user's :func:`row_limit`
    because a longer row cannot be parsed at all."""
    return max(MIN_BLOCK, min(batch_rows * BYTES_PER_ROW, CSV_BLOCK), row_limit(options))


def csv_batches(path: str, *, options: CsvOptions, batch_rows: int,
                types: dict[str, pa.DataType] | None, bad: BadRows,
                **_: object) -> Iterator[pa.RecordBatch]:
    """Stream one CSV file as record batches of about ``batch_rows`` rows."""
    _check_encoding_bom(path, options)

    failed: list[DataError] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        """Called by pyarrow's parser; exceptions raised here would be swallowed."""
        line = find_line(path, options, lambda n, text: text == row.text
                         and n not in bad.parser_skipped)
        try:
            bad.reject(path, line, f"expected {row.expected_columns} fields, "
                                   f"got {row.actual_columns}", row.text)
            bad.parser_skipped.append(line or 0)
        except DataError as err:
            failed.append(err)
            return "error"
        return "skip"

    block = block_bytes(batch_rows, options)
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
        if STRADDLE in str(err):
            raise long_row_error(path, block) from None
        raise (failed[0] if failed else _csv_error(path, options, err)) from None
    except (UnicodeDecodeError, LookupError) as err:
        raise DataError(f"{path}: cannot be decoded as {options.encoding}: {err}") from None


def long_row_error(path: str, block: int) -> DataError:
    """The first line longer than ``block`` bytes, how long it is, and the option that
    raises the limit. Slow path (reads the file again), errors only."""
    line, size = _first_long_line(path, block)
    where = f"{path}: line {line}" if line else path
    need = 1 << max(size, block).bit_length()  # the next power of two above the row
    option = f"--ingest-options '{{\"csv\": {{\"{ROW_LIMIT_OPTION}\": {need}}}}}'"
    return DataError(f"{where}: a row of {size:,} bytes is longer than the reader's block "
                     f"of {block:,} bytes (the longest row it can parse); raise the limit "
                     f"with {option} (more memory per block)")


def _first_long_line(path: str, block: int) -> tuple[int | None, int]:
    """Line number and byte length of the first line of at least ``block`` bytes.

    pyarrow splits rows at newlines (``newlines_in_values`` is off), so a physical
    line is the row it could not fit.
    """
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if len(raw) >= block:
                return number, len(raw)
    return None, block


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
        line = find_line(path, options, lambda _n, _t: False)
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


def find_line(path: str, options: CsvOptions, match: Callable[[int, str], bool]) -> int | None:
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

        line = find_line(path, options, has_value)
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
