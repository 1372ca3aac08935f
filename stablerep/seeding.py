"""Seeds as pure functions of integers, so work gives the same result however it is split."""

from __future__ import annotations

import hashlib


def mix_seed(*values: int) -> int:
    """A stable 63-bit seed from integers (Python's hash() is not a contract across versions)."""
    digest = hashlib.blake2b(repr(tuple(int(v) for v in values)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def image_seed(base_seed: int, caption_id: int, image_index: int) -> int:
    """The generation seed of image ``image_index`` of a caption: independent of sharding, batch
    size, order and retries."""
    return mix_seed(base_seed, caption_id, image_index)
