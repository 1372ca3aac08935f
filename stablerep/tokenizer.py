"""The caption tokenizer: CLIP BPE from the vocabulary that open_clip ships (no download).

It sits below both the models (the text tower reads its ids) and the data loader (which tokenizes
captions in its workers), so neither has to import the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer


class CaptionTokenizer:
    """CLIP BPE tokenizer from the vocabulary that open_clip ships (no download).

    ``tokenizer(["a cat", ...])`` -> LongTensor (B, context_length), padded with 0 and truncated
    so the end-of-text token is kept.
    """

    def __init__(self, context_length: int = 77) -> None:
        self.context_length = context_length
        self._tok = SimpleTokenizer(context_length=context_length)

    def __call__(self, texts: Sequence[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        return self._tok(list(texts), context_length=self.context_length)
