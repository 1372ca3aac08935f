"""Cheap checks of image bytes as a corpus stores them: the format from the magic bytes, and
whether the image decodes (header plus an end check by default, a full decode on request).

Resizing is not here: the importer re-encodes with :func:`stablerep.shards.images.encode_image`,
the one resize-and-encode of every image the project stores.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageFile

from stablerep.errors import CorpusSourceError

_PNG_END = b"IEND\xaeB`\x82"


def sniff_ext(data: bytes) -> str | None:
    """jpg / png / webp / gif / bmp / tiff from the first bytes, or None."""
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


def _ends_whole(fmt: str | None, data: bytes) -> bool | None:
    """Whether the bytes end as a whole file of ``fmt`` ends; None where no cheap check exists."""
    if fmt == "JPEG":
        return data.rstrip(b"\x00").endswith(b"\xff\xd9")  # EOI; some writers pad with zeros
    if fmt == "PNG":
        return data.rstrip(b"\x00").endswith(_PNG_END)  # the IEND chunk with its CRC
    if fmt == "WEBP":
        return len(data) >= int.from_bytes(data[4:8], "little") + 8  # the RIFF size covers the file
    return None


def _open(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))


def _load(data: bytes, where: str) -> None:
    """A full decode; truncation and corruption as CorpusSourceError."""
    try:
        with _open(data) as img:
            img.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error... by plugin
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        kind = "truncated image" if "truncated" in text.lower() else "undecodable image"
        raise CorpusSourceError(f"{where}: {kind} ({text})") from None


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header by walking its marker segments, for a file that
    starts with SOI and ends with EOI; None when the walk does not find a sane frame header (the
    caller then asks PIL). About 20 times cheaper than PIL's open, which parses every segment."""
    if not (data[:3] == b"\xff\xd8\xff" and data.rstrip(b"\x00").endswith(b"\xff\xd9")):
        return None
    pos, end = 2, len(data)
    while pos + 9 < end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2:
            return None
        if marker in _SOF:
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            return (width, height) if width > 0 and height > 0 and pos + 2 + length <= end else None
        if marker in (0xDA, 0xD9):  # scan data before any frame header: not a baseline file
            return None
        pos += 2 + length
    return None


def check_image(data: bytes, where: str, full_decode: bool = False) -> tuple[int, int]:
    """(width, height) of an image, or CorpusSourceError naming ``where``.

    Cheap by default: the header (a JPEG's frame header read directly, other formats through PIL's
    open) and an end check of the format (a JPEG ends with its
    EOI marker, a PNG with its IEND chunk, a WebP holds the bytes its RIFF header counts); images
    that fail the end check (trailing bytes after the end are legal) and other formats are decoded
    in full. ``full_decode=True`` decodes every image.
    """
    if not data:
        raise CorpusSourceError(f"{where}: undecodable image (empty: 0 bytes)")
    if not full_decode and not ImageFile.LOAD_TRUNCATED_IMAGES:
        size = jpeg_size(data)  # a whole JPEG with a frame header: the common case, checked cheaply
        if size is not None:
            return size
    try:
        with _open(data) as img:
            width, height, fmt = img.size[0], img.size[1], img.format
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # PIL's WebP decoder takes the whole file at open: a short one fails here, not at load
        kind = "truncated" if sniff_ext(data) == "webp" and _ends_whole("WEBP", data) is False else "undecodable"
        raise CorpusSourceError(f"{where}: {kind} image ({text})") from None
    if width <= 0 or height <= 0:
        raise CorpusSourceError(f"{where}: undecodable image (size {width}x{height})")
    whole = _ends_whole(fmt, data)
    if whole is False and ImageFile.LOAD_TRUNCATED_IMAGES:
        # someone made PIL accept truncated files: a full decode can no longer tell
        raise CorpusSourceError(f"{where}: truncated image ({fmt} without its end marker, {len(data)} bytes)")
    if full_decode or whole is not True:
        try:
            _load(data, where)
        except CorpusSourceError:
            if whole is False:
                raise CorpusSourceError(f"{where}: truncated image ({fmt} without its end marker, "
                                        f"{len(data)} bytes)") from None
            raise
    return width, height
