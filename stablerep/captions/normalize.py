"""Caption normalisation, filters and stable ids."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)


def normalize_caption(text: str) -> str:
    """Unicode NFC, every run of whitespace (newlines, tabs, NBSP...) to one space, stripped."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def caption_id(normalized: str) -> int:
    """A stable non-negative int64 id: the first 8 bytes of BLAKE2b of the normalised UTF-8 text."""
    digest = hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


@dataclass
class CaptionFilter:
    """Length bounds and a blocklist. ``check`` returns (caption or None, reason).

    Captions longer than ``max_chars`` are cut at the last word boundary within the limit (and
    counted as truncated), not dropped: a text encoder truncates at 77 tokens anyway, and the
    caption stays usable. Blocklist entries match whole words, case-insensitively.
    """

    min_chars: int = 1
    max_chars: int = 1000
    min_words: int = 1
    blocklist: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.min_chars < 0 or self.max_chars < max(1, self.min_chars):
            raise ValueError(f"caption length bounds are inconsistent: min_chars={self.min_chars}, "
                             f"max_chars={self.max_chars}")
        self.blocklist = {w.lower() for w in self.blocklist}

    def check(self, normalized: str) -> tuple[str | None, str]:
        if not normalized:
            return None, "empty"
        if len(normalized) < self.min_chars:
            return None, "too_short"
        words = _WORD.findall(normalized.lower())
        if len(words) < self.min_words:
            return None, "too_short"
        if self.blocklist and not self.blocklist.isdisjoint(words):
            return None, "blocked"
        if len(normalized) > self.max_chars:
            cut = normalized[: self.max_chars + 1]
            space = cut.rfind(" ")
            return (cut[:space] if space > 0 else cut[: self.max_chars]).rstrip(), "truncated"
        return normalized, "ok"
