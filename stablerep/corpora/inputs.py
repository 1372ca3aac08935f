"""Which files a corpus import reads: sources (files, folders, globs, brace patterns; local or any
fsspec URL) resolved to an ordered list of :class:`CorpusInput`, each with its format.

Formats: ``webdataset`` (.tar: img2dataset's webdataset output or any WebDataset shard),
``img2dataset-parquet`` (img2dataset's parquet output: a binary ``jpg`` column), ``hf-parquet``
(Hugging Face ``datasets`` Parquet: an Image column struct{bytes, path}), ``csv`` / ``tsv`` (a
header with an image path column and a caption column). Problems are :class:`CorpusSourceError`
naming the path.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from stablerep import storage
from stablerep.errors import CorpusSourceError

FORMATS = ("webdataset", "img2dataset-parquet", "hf-parquet", "csv", "tsv")
DEFAULT_CSV_IMAGE_COLUMN = "image"
DEFAULT_I2D_IMAGE_COLUMN = "jpg"
_EXT_FORMAT = {".tar": "webdataset", ".csv": "csv", ".tsv": "tsv"}
_GLOB = re.compile(r"[*?\[]")
_BRACE = re.compile(r"\{[^{}]*(,|\.\.)[^{}]*\}")


@dataclass(frozen=True)
class CorpusInput:
    """One input file of a corpus import (what the lineage of the result names)."""

    url: str  # one file, local path or fsspec URL
    format: str  # one of FORMATS
    size: int  # bytes
    etag: str | None = None  # the object store's ETag (s3), else None

    def lineage(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url, "format": self.format, "size": self.size}
        if self.etag is not None:
            out["etag"] = self.etag
        return out


# -- file names -------------------------------------------------------------------------------
def _suffix(path: str) -> str:
    name = posixpath.basename(path.rstrip("/")).lower()
    return "." + name.rsplit(".", 1)[1] if "." in name else ""


def _ignored(path: str) -> bool:
    """Hidden files and img2dataset's bookkeeping (NNNNN_stats.json, *.json) are never inputs."""
    name = posixpath.basename(path.rstrip("/"))
    return name.startswith(".") or name.lower().endswith(".json")


def _pick(files: list[str], fmt: str) -> list[str]:
    """The corpus files among the files of one folder or glob: with fmt=auto the tars where there
    are any (img2dataset puts a metadata .parquet beside each tar), else the parquets, else the
    csv/tsv files; with a format, the files of its extension."""
    files = [f for f in files if not _ignored(f)]
    by_suffix: dict[str, list[str]] = {}
    for f in files:
        by_suffix.setdefault(_suffix(f), []).append(f)
    if fmt == "webdataset":
        return by_suffix.get(".tar", [])
    if fmt in ("img2dataset-parquet", "hf-parquet"):
        return by_suffix.get(".parquet", [])
    if fmt in ("csv", "tsv"):
        return by_suffix.get(f".{fmt}", [])
    for group in ((".tar",), (".parquet",), (".csv", ".tsv")):
        picked = [f for f in files if _suffix(f) in group]
        if picked:
            return picked
    return []


def _url(fs, path: str) -> str:
    """A path of ``fs`` as the URL users pass (plain paths locally, protocol://... elsewhere)."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def _etag(info: dict[str, Any]) -> str | None:
    etag = info.get("ETag") or info.get("etag")
    return str(etag).strip('"') if etag else None


# -- expanding one source ---------------------------------------------------------------------
def _brace_expand(pattern: str) -> list[str]:
    import braceexpand

    return list(braceexpand.braceexpand(pattern))


def _expand(source: str, fmt: str) -> list[tuple[str, dict[str, Any]]]:
    """(url, info) of the corpus files that one source names, in order."""
    if _BRACE.search(source):
        out = []
        for item in _brace_expand(source):
            out.extend(_expand(item, fmt))
        return out
    fs, path = storage.get_fs(source)
    if _GLOB.search(path):
        matches = storage.with_retries("list", source, lambda: fs.glob(path, detail=True))
        files = {p: i for p, i in matches.items() if i.get("type") != "directory"}
        picked = _pick(sorted(files), fmt)
        if not picked:
            raise CorpusSourceError(f"{source}: the pattern matches no corpus file "
                                    "(.tar, .parquet, .csv or .tsv)")
        return [(_url(fs, p), files[p]) for p in picked]
    try:
        info = storage.with_retries("read", source, lambda: fs.info(path))
    except FileNotFoundError:
        raise CorpusSourceError(f"{source}: no such file or folder") from None
    if info.get("type") == "directory":
        listing = storage.with_retries("list", source, lambda: fs.ls(path, detail=True))
        files = {i["name"]: i for i in listing if i.get("type") != "directory"}
        picked = _pick(sorted(files), fmt)
        if not picked:
            raise CorpusSourceError(f"{source}: the folder holds no corpus file (.tar, .parquet, .csv or .tsv)")
        return [(_url(fs, p), files[p]) for p in picked]
    return [(_url(fs, path), info)]  # local paths made absolute, so the same file de-duplicates


# -- formats ----------------------------------------------------------------------------------
def _columns_text(schema: pa.Schema) -> str:
    return ", ".join(schema.names) or "none"


def is_image_struct(dtype: pa.DataType) -> bool:
    """The Hugging Face ``datasets`` Image layout: struct{bytes: binary, path: string}."""
    if not pa.types.is_struct(dtype):
        return False
    names = {dtype.field(i).name for i in range(dtype.num_fields)}
    return {"bytes", "path"} <= names


def _is_binary(dtype: pa.DataType) -> bool:
    return pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype)


def read_parquet_schema(url: str) -> pa.Schema:
    """The Arrow schema of a Parquet file (only its footer is read)."""
    fs, path = storage.get_fs(url)

    def read() -> pa.Schema:
        with fs.open(path, "rb") as f:
            return pq.ParquetFile(f).schema_arrow

    try:
        return storage.with_retries("read", url, read)
    except FileNotFoundError:
        raise CorpusSourceError(f"{url}: no such file or folder") from None
    except (pa.ArrowInvalid, ValueError) as exc:
        raise CorpusSourceError(f"{url}: not a readable Parquet file ({exc})") from None


def parquet_image_column(url: str, schema: pa.Schema, fmt: str, image_column: str | None) -> str:
    """The image column of a Parquet input of format ``fmt`` (checked against the schema)."""
    if fmt == "img2dataset-parquet":
        name = image_column or DEFAULT_I2D_IMAGE_COLUMN
        if name not in schema.names or not _is_binary(schema.field(name).type):
            raise CorpusSourceError(f"{url}: no binary image column {name!r} (columns: {_columns_text(schema)})")
        return name
    if image_column is not None:
        if image_column not in schema.names or not is_image_struct(schema.field(image_column).type):
            raise CorpusSourceError(f"{url}: no image column {image_column!r} of the Hugging Face Image "
                                    f"layout struct{{bytes, path}} (columns: {_columns_text(schema)})")
        return image_column
    for field in schema:
        if is_image_struct(field.type):
            return field.name
    raise CorpusSourceError(f"{url}: no image column of the Hugging Face Image layout struct{{bytes, path}} "
                            f"(columns: {_columns_text(schema)})")


def detect_parquet_format(url: str, schema: pa.Schema, image_column: str | None) -> str:
    """img2dataset-parquet for a binary image column (``image_column`` or ``jpg``; img2dataset
    writes ``status`` beside it), hf-parquet for an Image struct column; else an error."""
    name = image_column or DEFAULT_I2D_IMAGE_COLUMN
    if name in schema.names and _is_binary(schema.field(name).type):
        return "img2dataset-parquet"
    if image_column is not None and image_column in schema.names and is_image_struct(schema.field(image_column).type):
        return "hf-parquet"
    if image_column is None and any(is_image_struct(f.type) for f in schema):
        return "hf-parquet"
    wanted = f"{image_column!r}" if image_column else "a binary 'jpg' column (img2dataset) or a struct{bytes, path} column (Hugging Face Image)"
    raise CorpusSourceError(f"{url}: no image column: expected {wanted} (columns: {_columns_text(schema)})")


def read_csv_header(url: str, delimiter: str) -> list[str]:
    fs, path = storage.get_fs(url)

    def read() -> list[str]:
        with fs.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
            return next(csv.reader(text, delimiter=delimiter), [])

    try:
        return storage.with_retries("read", url, read)
    except UnicodeDecodeError as exc:
        raise CorpusSourceError(f"{url}: header: not valid UTF-8 ({exc.reason})") from None


def _check(url: str, fmt: str, image_column: str | None, caption_column: str) -> str:
    """The format of one input (fmt=auto: from the name, and the schema of a parquet), with its
    image and caption columns checked."""
    suffix = _suffix(url)
    if fmt == "auto":
        if suffix == ".parquet":
            schema = read_parquet_schema(url)
            fmt = detect_parquet_format(url, schema, image_column)
        elif suffix in _EXT_FORMAT:
            fmt = _EXT_FORMAT[suffix]
        else:
            raise CorpusSourceError(f"{url}: cannot tell the corpus format from the extension {suffix or '(none)'!r}; "
                                    f"use .tar, .parquet, .csv or .tsv, or pass one of {', '.join(FORMATS)}")
    if fmt in ("img2dataset-parquet", "hf-parquet"):
        schema = read_parquet_schema(url)
        parquet_image_column(url, schema, fmt, image_column)
        if caption_column not in schema.names:
            raise CorpusSourceError(f"{url}: no caption column {caption_column!r} (columns: {_columns_text(schema)})")
    elif fmt in ("csv", "tsv"):
        header = read_csv_header(url, "," if fmt == "csv" else "\t")
        image = image_column or DEFAULT_CSV_IMAGE_COLUMN
        for kind, name in (("image", image), ("caption", caption_column)):
            if name not in header:
                raise CorpusSourceError(f"{url}: no {kind} column {name!r} in the header "
                                        f"(columns: {', '.join(header) or 'none'})")
    return fmt


def resolve_inputs(sources: list[str], fmt: str = "auto", *, image_column: str | None = None,
                   caption_column: str = "caption") -> list[CorpusInput]:
    """The input files that ``sources`` name, de-duplicated and in order, each with its format.

    A source is a file, a folder (the corpus files directly inside it, by name: its tars if it
    holds any, else its parquets, else its csv/tsv files; hidden files and .json are ignored), a
    glob (``shards/*.tar``) or a brace pattern (``shards/{00000..00009}.tar``, expanded in its own
    order), local or any fsspec URL. ``fmt="auto"`` tells the format from the extension and, for
    Parquet, from the schema alone. Raises CorpusSourceError naming the path.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise CorpusSourceError(f"unknown corpus format {fmt!r}; use auto or one of {', '.join(FORMATS)}")
    if not sources:
        raise CorpusSourceError("no corpus sources given")
    out: list[CorpusInput] = []
    seen: set[str] = set()
    for source in sources:
        for url, info in _expand(str(source), fmt):
            if url in seen:
                continue
            seen.add(url)
            found = _check(url, fmt, image_column, caption_column)
            out.append(CorpusInput(url=url, format=found, size=int(info.get("size") or 0), etag=_etag(info)))
    return out
