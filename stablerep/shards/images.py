"""Image encoding for storage: the one resize-and-encode of every image a dataset stores
(synthesised images, and imported ones when an import asks for a size)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

IMAGE_FORMATS = {"jpeg": ("JPEG", "jpg"), "webp": ("WEBP", "webp"), "png": ("PNG", "png")}


def encode_image(img: Image.Image, size: int | None = 256, fmt: str = "jpeg",
                 quality: int = 95) -> tuple[bytes, int, int]:
    """Downscale (antialiased, shorter side to ``size``) and encode; returns (bytes, width, height)."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; use one of {', '.join(IMAGE_FORMATS)}")
    img = img.convert("RGB")
    if size is not None and min(img.size) != size:
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    pil_format, _ = IMAGE_FORMATS[fmt]
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {}
    if pil_format in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if pil_format == "PNG":
        kwargs["optimize"] = False
    img.save(buf, format=pil_format, **kwargs)
    return buf.getvalue(), img.size[0], img.size[1]
