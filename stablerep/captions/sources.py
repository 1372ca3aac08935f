"""Streaming readers for caption corpora: txt, csv/tsv, jsonl, parquet; local or any fsspec URL.

Every reader yields one :class:`RawCaption` at a time, so a 12M-caption file never sits in memory.
Problems are :class:`CaptionSourceError` naming the file and the line or row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from stablerep import storage
from stablerep.errors import CaptionSourceError

FORMATS = ("txt", "csv", "tsv", "jsonl", "parquet")




@dataclass
class RawCaption:
    text: str
    where: str  # "line 12" / "row 12", for messages
    extra: dict[str, Any] = field(default_factory=dict)  # the source's other columns, as given


def detect_format(url: str) -> str:
    name = url.lower().removesuffix(".gz")
    for fmt, exts in (("txt", (".txt",)), ("csv", (".csv",)), ("tsv", (".tsv",)),
                      ("jsonl", (".jsonl", ".ndjson")), ("parquet", (".parquet", ".pq"))):
        if name.endswith(exts):
            return fmt
    raise CaptionSourceError(f"{url}: cannot tell the format from the name; pass one of {', '.join(FORMATS)}")


def _open_text(url: str) -> Iterator[tuple[int, str]]:
    """(line number, line without newline); strict UTF-8; NUL bytes are an error."""
    fs, path = storage.get_fs(url)
    compression = "gzip" if url.endswith(".gz") else None
    with fs.open(path, "rb", compression=compression) as raw:
        for number, line in enumerate(raw, start=1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CaptionSourceError(f"{url}: line {number}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            if "\x00" in text:
                raise CaptionSourceError(f"{url}: line {number}: contains NUL bytes (a binary file?)")
            if number == 1:
                text = text.removeprefix("\ufeff")
            yield number, text.rstrip("\r\n")


def _read_txt(url: str) -> Iterator[RawCaption]:
    for number, line in _open_text(url):
        yield RawCaption(line, f"line {number}")


def _read_delimited(url: str, column: str, delimiter: str) -> Iterator[RawCaption]:
    lines = _open_text(url)
    try:
        _, header_line = next(lines)
    except StopIteration:
        return
    header = next(csv.reader([header_line], delimiter=delimiter))
    if column not in header:
        raise CaptionSourceError(f"{url}: no column {column!r} in the header (columns: {', '.join(header)})")

    def body() -> Iterator[str]:
        for _, line in lines:
            yield line + "\n"

    reader = csv.DictReader(body(), fieldnames=header, delimiter=delimiter)
    for row_number, row in enumerate(reader, start=1):
        if None in row:
            raise CaptionSourceError(f"{url}: row {row_number}: more fields than the header has")
        text = row.pop(column)
        if text is None:
            raise CaptionSourceError(f"{url}: row {row_number}: missing the {column!r} field")
        yield RawCaption(text, f"row {row_number}", row)


def _read_jsonl(url: str, column: str) -> Iterator[RawCaption]:
    for number, line in _open_text(url):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CaptionSourceError(f"{url}: line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or column not in obj:
            raise CaptionSourceError(f"{url}: line {number}: no {column!r} key")
        text = obj.pop(column)
        if not isinstance(text, str):
            raise CaptionSourceError(f"{url}: line {number}: {column!r} is not a string")
        yield RawCaption(text, f"line {number}", obj)


def _read_parquet(url: str, column: str) -> Iterator[RawCaption]:
    fs, path = storage.get_fs(url)
    try:
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            if column not in pf.schema_arrow.names:
                raise CaptionSourceError(f"{url}: no column {column!r} (columns: {', '.join(pf.schema_arrow.names)})")
            row = 0
            for batch in pf.iter_batches(batch_size=8192, use_threads=False):  # see read_parquet_bytes
                for rec in batch.to_pylist():
                    row += 1
                    text = rec.pop(column)
                    if not isinstance(text, str):
                        if text is None:
                            continue
                        raise CaptionSourceError(f"{url}: row {row}: {column!r} is not a string")
                    yield RawCaption(text, f"row {row}", rec)
    except CaptionSourceError:
        raise
    except (OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CaptionSourceError(f"{url}: not a readable Parquet file ({exc})") from None


def read_captions(url: str, fmt: str | None = None, column: str = "caption") -> Iterator[RawCaption]:
    """Stream the captions of ``url`` (format from the extension unless ``fmt`` is given).

    csv/tsv/jsonl/parquet take the caption from ``column`` and keep the other fields in ``extra``.
    Raises FileNotFoundError for a missing file and CaptionSourceError for unreadable content.
    """
    fmt = fmt or detect_format(url)
    if fmt not in FORMATS:
        raise CaptionSourceError(f"unknown caption format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not storage.exists(url):
        raise FileNotFoundError(f"caption file not found: {url}")
    if fmt == "txt":
        return _read_txt(url)
    if fmt in ("csv", "tsv"):
        return _read_delimited(url, column, "," if fmt == "csv" else "\t")
    if fmt == "jsonl":
        return _read_jsonl(url, column)
    return _read_parquet(url, column)
