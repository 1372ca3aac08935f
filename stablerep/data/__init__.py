"""Batch sources for training. A batch is a dict:

- ``images``: float tensor (captions, m, C, H, W)
- ``labels``: int64 caption ids (captions,), arbitrary ids (hashes), not positions
- ``tokens``: optional int64 (captions, context_length), for methods with a text tower
"""

from stablerep.data.random_source import RandomCaptionBatches

__all__ = ["RandomCaptionBatches"]
