"""Streaming readers of image-caption corpora: one :class:`CorpusSample` at a time, in the
input's own order, with a locator that :func:`read_images` takes to fetch the bytes again without
a scan (a tar member's offset and size, a parquet row, a CSV's image path).

Problems are :class:`CorpusSourceError` naming the file and the member or row.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from stablerep import storage
from stablerep.corpora.images import sniff_ext
from stablerep.corpora.inputs import (
    DEFAULT_CSV_IMAGE_COLUMN,
    CorpusInput,
    parquet_image_column,
    read_parquet_schema,
)
from stablerep.errors import CorpusSourceError, StorageError

SOURCE_FIELDS = ("key", "url", "sha256", "width", "height")  # kept from img2dataset json / columns
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
BATCH_ROWS = 256
CSV_BATCH_ROWS = 64
# webdataset's rules (webdataset.tariterators): key = the name up to the first dot of its
# basename, extension = the rest; __meta__ members are skipped.
_BASE_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_META = re.compile(r"__[^/]*__($|/)")


@dataclass
class CorpusSample:
    """One image-caption pair of an input, as the input stores it."""

    position: int  # 0-based order in its input (tar sample order, parquet/csv row)
    where: str  # for messages: "member 000000012.jpg", "row 12" (1-based)
    caption: str | None  # the raw caption (None when missing or null)
    ext: str | None  # jpg | png | webp ... (None without an image)
    image: bytes | None  # the bytes as stored (None when absent or not read)
    locator: str  # what read_images() takes: tar "OFFSET:SIZE", parquet "ROW", csv the image URL
    source: dict[str, Any] = field(default_factory=dict)  # key, url, sha256, width, height (str/int)
    skip: str | None = None  # a reason the source itself gives: "status_failed_to_download"


def _norm_ext(ext: str | None) -> str | None:
    if not ext:
        return None
    ext = ext.lower().lstrip(".")
    return "jpg" if ext == "jpeg" else ext


def _path_ext(path: str | None) -> str | None:
    name = posixpath.basename(path or "")
    return _norm_ext(name.rsplit(".", 1)[1]) if "." in name else None


def _source(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name in (*SOURCE_FIELDS, "status"):
        value = values.get(name)
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            out[name] = value
    return out


# -- WebDataset tars --------------------------------------------------------------------------
def base_plus_ext(name: str) -> tuple[str | None, str | None]:
    """webdataset's split of a member name: ("dir/000012", "jpg"); ("a", "b.jpg") for a.b.jpg."""
    match = _BASE_EXT.match(name)
    return (match.group(1), match.group(2)) if match else (None, None)


class _TarSample:
    def __init__(self, key: str, first: str):
        self.key, self.first = key, first
        self.exts: set[str] = set()
        self.image: tuple[str, _Member | tarfile.TarInfo, bytes | None] | None = None
        self.caption: str | None = None
        self.meta: dict[str, Any] = {}


def _read_member(f, url: str, info: _Member | tarfile.TarInfo) -> bytes:
    f.seek(info.offset_data)
    data = f.read(info.size)
    if len(data) != info.size:
        raise CorpusSourceError(f"{url}: member {info.name}: truncated tar (the member holds {len(data)} of "
                                f"its {info.size} bytes)")
    return data


def _tar_sample(s: _TarSample, position: int) -> CorpusSample:
    source = _source(s.meta)
    source.setdefault("key", s.key)
    if s.image is None:
        return CorpusSample(position, f"member {s.first}", s.caption, None, None, "", source)
    ext, info, data = s.image
    return CorpusSample(position, f"member {info.name}", s.caption, _norm_ext(ext), data,
                        f"{info.offset_data}:{info.size}", source)


@dataclass(frozen=True)
class _Member:
    """What the reader needs of a tar member (tarfile.TarInfo has the same attributes)."""

    name: str
    offset_data: int
    size: int
    regular: bool

    def isreg(self) -> bool:
        return self.regular


def _plain_header(block: bytes) -> tuple[str, int, bool] | None:
    """(name, size, regular) of a plain ustar/GNU header of a file or folder, read directly (about
    20 times cheaper than tarfile's general parser); None for anything else (PAX and GNU long-name
    headers, links, base-256 sizes, a bad checksum), which tarfile then reads."""
    try:
        stored = int(block[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
        if stored != sum(block) - sum(block[148:156]) + 256 or block[124] & 0x80:
            return None
        size = int(block[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        name = block[:100].split(b"\0", 1)[0]
        if block[257:263] == b"ustar\0" and block[345] != 0:  # POSIX ustar: a prefix of the name
            name = block[345:500].split(b"\0", 1)[0] + b"/" + name
        text = name.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    kind = block[156:157]
    if kind not in (b"0", b"\0", b"5"):
        return None
    return text, size, kind != b"5"


def _members(f, url: str, size: int | None) -> Iterator[_Member | tarfile.TarInfo]:
    """Every member header in tar order: plain headers read directly, the rest (from the first
    header that is not plain on) by tarfile; then the check that the archive ends whole."""
    offset, last = 0, None
    while True:
        f.seek(offset)
        block = f.read(tarfile.BLOCKSIZE)
        if len(block) == tarfile.BLOCKSIZE and block.count(0) == tarfile.BLOCKSIZE:
            return  # the end-of-archive marker
        plain = _plain_header(block) if len(block) == tarfile.BLOCKSIZE else None
        if plain is None:
            break
        last = plain[0]
        yield _Member(plain[0], offset + tarfile.BLOCKSIZE, plain[1], plain[2])
        offset += tarfile.BLOCKSIZE + -(-plain[1] // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    f.seek(offset)
    if offset and size is not None and offset >= size:
        raise CorpusSourceError(f"{url}: member {last}: truncated tar (the file ends at byte {size}, "
                                "without the end-of-archive marker)")
    try:
        tar = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 - starts at this header; seekable
    except tarfile.ReadError as exc:
        where = f"member {last}: truncated tar" if last else "not a readable tar file"
        raise CorpusSourceError(f"{url}: {where} ({exc})") from None
    while True:
        try:
            info = tar.next()
        except tarfile.ReadError as exc:
            raise CorpusSourceError(f"{url}: member {last}: truncated tar ({exc})") from None
        if info is None:
            break
        last = info.name
        yield info
    # tarfile stops quietly at a cut or broken header; a whole archive ends with a zero block
    f.seek(tar.offset)
    block = f.read(tarfile.BLOCKSIZE)
    member = f"member {last}: " if last else ""
    if len(block) < tarfile.BLOCKSIZE:
        raise CorpusSourceError(f"{url}: {member}truncated tar (the file ends at byte {tar.offset + len(block)}, "
                                "without the end-of-archive marker)")
    if block.count(0) != tarfile.BLOCKSIZE:
        raise CorpusSourceError(f"{url}: {member}truncated tar (a broken header at byte {tar.offset} follows)")


def _tar_members(f, url: str) -> Iterator[tuple[_Member | tarfile.TarInfo, str, str]]:
    """(member, key, extension) of the members webdataset reads, in tar order; a cut or broken
    archive is an error naming the member where it breaks."""
    size = f.size if isinstance(getattr(f, "size", None), int) else None
    for info in _members(f, url, size):
        name = info.name
        if size is not None and info.offset_data + info.size > size:
            raise CorpusSourceError(f"{url}: member {name}: truncated tar (the member needs bytes up to "
                                    f"{info.offset_data + info.size}, the file has {size})")
        if not info.isreg() or _META.match(name) or ("/" not in name and name.startswith("__") and name.endswith("__")):
            continue
        key, ext = base_plus_ext(name)
        if key is not None:
            yield info, key, ext.lower()


def _iter_tar(inp: CorpusInput, caption_extension: str, image_extensions: tuple[str, ...],
              with_images: bool) -> Iterator[CorpusSample]:
    url, images = inp.url, {e.lower().lstrip(".") for e in image_extensions}
    caption_ext = caption_extension.lower().lstrip(".")
    fs, path = storage.get_fs(url)
    with fs.open(path, "rb") as f:
        current: _TarSample | None = None
        position = 0
        for info, key, ext in _tar_members(f, url):
            if current is None or key != current.key:  # webdataset groups consecutive members
                if current is not None:
                    yield _tar_sample(current, position)
                    position += 1
                current = _TarSample(key, info.name)
            if ext in current.exts:
                raise CorpusSourceError(f"{url}: member {info.name}: a second .{ext} member in sample {key!r}")
            current.exts.add(ext)
            if ext in images and current.image is None:  # read now: the file is read forward only
                current.image = (ext, info, _read_member(f, url, info) if with_images else None)
            elif ext == caption_ext:
                try:
                    current.caption = _read_member(f, url, info).decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    raise CorpusSourceError(f"{url}: member {info.name}: caption not valid UTF-8 ({exc.reason})") from None
            elif ext == "json":
                try:
                    meta = json.loads(_read_member(f, url, info))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise CorpusSourceError(f"{url}: member {info.name}: not valid JSON ({exc})") from None
                current.meta = meta if isinstance(meta, dict) else {}
        if current is not None:
            yield _tar_sample(current, position)


def _read_tar(inp: CorpusInput, locators: list[str]) -> list[bytes]:
    spans = []
    for loc in locators:
        try:
            offset, size = (int(x) for x in loc.split(":"))
        except ValueError:
            raise CorpusSourceError(f"{inp.url}: bad tar locator {loc!r} (want OFFSET:SIZE)") from None
        spans.append((offset, size))
    fs, path = storage.get_fs(inp.url)
    found: dict[tuple[int, int], bytes] = {}
    with fs.open(path, "rb") as f:
        for offset, size in sorted(set(spans)):  # one pass forward through the file
            f.seek(offset)
            data = f.read(size)
            if len(data) != size:
                raise CorpusSourceError(f"{inp.url}: truncated tar (bytes {offset}..{offset + size} are missing)")
            found[(offset, size)] = data
    return [found[s] for s in spans]


# -- Parquet (img2dataset and Hugging Face) ---------------------------------------------------
def _parquet_rows(inp: CorpusInput, columns: list[str]) -> Iterator[dict[str, Any]]:
    fs, path = storage.get_fs(inp.url)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        # single-threaded decode: see stablerep.shards.layout.read_parquet_bytes
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns, use_threads=False):
            yield from batch.to_pylist()


def _iter_parquet(inp: CorpusInput, image_column: str | None, caption_column: str,
                  with_images: bool) -> Iterator[CorpusSample]:
    schema = read_parquet_schema(inp.url)
    image = parquet_image_column(inp.url, schema, inp.format, image_column)
    if caption_column not in schema.names:
        raise CorpusSourceError(f"{inp.url}: no caption column {caption_column!r} (columns: {', '.join(schema.names)})")
    hf = inp.format == "hf-parquet"
    extra = [c for c in (*SOURCE_FIELDS, "status") if c in schema.names and c not in (image, caption_column)]
    columns = [caption_column, *extra, *([image] if with_images or hf else [])]
    for row, rec in enumerate(_parquet_rows(inp, columns)):
        where = f"row {row + 1}"
        caption = rec.get(caption_column)
        if caption is not None and not isinstance(caption, str):
            raise CorpusSourceError(f"{inp.url}: {where}: caption {caption_column!r} is not a string")
        status = rec.get("status")
        skip = None if status in (None, "success") else f"status_{status}"
        data, ext = None, None
        if hf:
            cell = rec.get(image)
            if cell is not None and cell.get("bytes") is None and cell.get("path"):
                raise CorpusSourceError(f"{inp.url}: {where}: image bytes not embedded (the dataset was saved "
                                        "with a path only; embed it with datasets.table.embed_table_storage)")
            if cell is not None and cell.get("bytes") is not None:
                ext = _path_ext(cell.get("path")) or sniff_ext(cell["bytes"])
                data = cell["bytes"] if with_images else None
        else:
            data = rec.get(image)
            if data is not None:
                ext = "jpg" if image == "jpg" else sniff_ext(data)
            elif not with_images and skip is None:
                ext = "jpg" if image == "jpg" else None  # the bytes were not read
        yield CorpusSample(row, where, caption, ext, data, str(row), _source(rec), skip)


def _read_parquet(inp: CorpusInput, locators: list[str], image_column: str | None) -> list[bytes]:
    try:
        rows = [int(loc) for loc in locators]
    except ValueError:
        raise CorpusSourceError(f"{inp.url}: bad parquet locator in {locators[:3]} (want a row number)") from None
    schema = read_parquet_schema(inp.url)
    image = parquet_image_column(inp.url, schema, inp.format, image_column)
    fs, path = storage.get_fs(inp.url)
    found: dict[int, bytes] = {}
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        starts, start = [], 0
        for g in range(pf.metadata.num_row_groups):
            starts.append((start, start + pf.metadata.row_group(g).num_rows, g))
            start += pf.metadata.row_group(g).num_rows
        wanted = sorted(set(rows))
        for lo, hi, g in starts:
            inside = [r for r in wanted if lo <= r < hi]
            if not inside:
                continue
            column = pf.read_row_group(g, columns=[image], use_threads=False).column(image)
            values = column.take(pa.array([r - lo for r in inside])).to_pylist()
            for r, value in zip(inside, values, strict=True):
                data = value.get("bytes") if isinstance(value, dict) else value
                if data is None:
                    raise CorpusSourceError(f"{inp.url}: row {r + 1}: no image bytes")
                found[r] = data
    missing = [r for r in rows if r not in found]
    if missing:
        raise CorpusSourceError(f"{inp.url}: row {missing[0] + 1}: no such row (the file has {start} rows)")
    return [found[r] for r in rows]


# -- CSV / TSV of image paths -----------------------------------------------------------------
def resolve_image_path(table_url: str, value: str) -> str:
    """An image path of a CSV as a URL: full URLs as given, absolute paths as given locally (or
    from the bucket root on a store), relative paths against the CSV's folder."""
    if "://" in value:
        return value
    fs, path = storage.get_fs(table_url)
    folder = posixpath.dirname(path)
    if isinstance(fs, LocalFileSystem):
        return value if os.path.isabs(value) else os.path.normpath(os.path.join(folder, value))
    return fs.unstrip_protocol(posixpath.normpath(posixpath.join(folder, value)))


def _read_files(urls: list[str]) -> list[bytes | None]:
    """The bytes of each URL (None where missing); the files of one store in one concurrent
    ``cat_ranges`` call (which, unlike ``cat``, takes names literally: no glob expansion)."""
    groups: dict[int, tuple[Any, list[int], list[str]]] = {}
    for i, url in enumerate(urls):
        fs, path = storage.get_fs(url)
        _, members, paths = groups.setdefault(id(fs), (fs, [], []))
        members.append(i)
        paths.append(path)
    out: list[bytes | None] = [None] * len(urls)
    for fs, members, paths in groups.values():
        got = storage.with_retries("read", urls[members[0]], lambda fs=fs, paths=paths: fs.cat_ranges(
            paths, [None] * len(paths), [None] * len(paths), on_error="return"))
        for i, value in zip(members, got, strict=True):
            if isinstance(value, FileNotFoundError | IsADirectoryError | NotADirectoryError):
                continue
            if isinstance(value, BaseException):
                with storage.storage_errors("read", urls[i]):
                    raise value
            out[i] = value
    return out


def _csv_rows(inp: CorpusInput) -> Iterator[tuple[int, dict[str, str]]]:
    delimiter = "," if inp.format == "csv" else "\t"
    fs, path = storage.get_fs(inp.url)
    with fs.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text, delimiter=delimiter)
        row = 0
        try:
            header = next(reader, [])
            for row, values in enumerate(reader, start=1):
                if not values:
                    continue
                if len(values) > len(header):
                    raise CorpusSourceError(f"{inp.url}: row {row}: more fields than the header has")
                yield row, dict(zip(header, values, strict=False))
        except UnicodeDecodeError as exc:
            raise CorpusSourceError(f"{inp.url}: after row {row}: not valid UTF-8 ({exc.reason})") from None
        except csv.Error as exc:
            raise CorpusSourceError(f"{inp.url}: row {row + 1}: {exc}") from None


def _csv_sample(inp: CorpusInput, row: int, rec: dict[str, str], image: str, caption_column: str) -> CorpusSample:
    for name in (image, caption_column):
        if name not in rec:
            raise CorpusSourceError(f"{inp.url}: row {row}: missing the {name!r} field")
    value = rec[image].strip()
    source = _source({k: (int(v) if k in ("width", "height") and v.isdigit() else v) for k, v in rec.items()
                      if k in SOURCE_FIELDS and v != ""})
    if not value:
        return CorpusSample(row - 1, f"row {row}", rec[caption_column], None, None, "", source)
    url = resolve_image_path(inp.url, value)
    return CorpusSample(row - 1, f"row {row}: image {value}", rec[caption_column], _path_ext(value), None, url, source)


def _with_images(inp: CorpusInput, samples: list[CorpusSample]) -> list[CorpusSample]:
    wanted = [s for s in samples if s.locator]
    for s, data in zip(wanted, _read_files([s.locator for s in wanted]), strict=True):
        if data is None:
            raise CorpusSourceError(f"{inp.url}: row {s.position + 1}: image {s.locator} not found")
        s.image, s.ext = data, s.ext or sniff_ext(data)
    return samples


def _iter_csv(inp: CorpusInput, image_column: str | None, caption_column: str,
              with_images: bool) -> Iterator[CorpusSample]:
    image = image_column or DEFAULT_CSV_IMAGE_COLUMN
    batch: list[CorpusSample] = []
    for row, rec in _csv_rows(inp):
        batch.append(_csv_sample(inp, row, rec, image, caption_column))
        if len(batch) == CSV_BATCH_ROWS:  # a store serves a batch of images concurrently
            yield from _with_images(inp, batch) if with_images else batch
            batch = []
    yield from _with_images(inp, batch) if with_images else batch


# -- entry points -----------------------------------------------------------------------------
def iter_samples(inp: CorpusInput, *, image_column: str | None = None, caption_column: str = "caption",
                 caption_extension: str = "txt", image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
                 with_images: bool = True) -> Iterator[CorpusSample]:
    """Stream the samples of one input in its own order (tar sample order, parquet/csv rows).

    ``with_images=False`` reads no image bytes (``image`` is None); the locators still find them.
    Raises CorpusSourceError naming the file and the member or row.
    """
    try:
        if inp.format == "webdataset":
            yield from _iter_tar(inp, caption_extension, image_extensions, with_images)
        elif inp.format in ("img2dataset-parquet", "hf-parquet"):
            yield from _iter_parquet(inp, image_column, caption_column, with_images)
        elif inp.format in ("csv", "tsv"):
            yield from _iter_csv(inp, image_column, caption_column, with_images)
        else:
            raise CorpusSourceError(f"{inp.url}: unknown corpus format {inp.format!r}")
    except FileNotFoundError:
        raise CorpusSourceError(f"{inp.url}: no such file or folder") from None
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, StorageError):
            raise
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorpusSourceError(f"{inp.url}: cannot read the {inp.format} input ({text})") from None


def read_images(inp: CorpusInput, locators: list[str], *, image_column: str | None = None) -> list[bytes]:
    """The image bytes at ``locators`` (from :func:`iter_samples`), in the given order: tar
    members by offset in one forward pass, parquet rows from their row groups' image column only,
    csv paths read concurrently per store."""
    if not locators:
        return []
    try:
        if inp.format == "webdataset":
            return _read_tar(inp, locators)
        if inp.format in ("img2dataset-parquet", "hf-parquet"):
            return _read_parquet(inp, locators, image_column)
        if inp.format in ("csv", "tsv"):
            blobs = _read_files(locators)
            for loc, data in zip(locators, blobs, strict=True):
                if data is None:
                    raise CorpusSourceError(f"{inp.url}: image {loc} not found")
            return blobs  # type: ignore[return-value]
    except FileNotFoundError:
        raise CorpusSourceError(f"{inp.url}: no such file or folder") from None
    raise CorpusSourceError(f"{inp.url}: unknown corpus format {inp.format!r}")
