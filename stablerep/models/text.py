"""Text tower for StableRep+ and CLIP: open_clip's text transformer and its bundled CLIP BPE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import TextTransformer
from torch import nn


def create_text_tower(width: int = 512, layers: int = 12, heads: int = 8, context_length: int = 77,
                      vocab_size: int = 49408, output_dim: int = 512) -> nn.Module:
    """CLIP's text transformer (causal mask, features from the EOT token, linear projection).

    ``forward(tokens (B, L))`` -> (B, output_dim). Random init; nothing is downloaded.
    """
    return TextTransformer(context_length=context_length, vocab_size=vocab_size, width=width,
                           heads=heads, layers=layers, output_dim=output_dim, pool_type="argmax")


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
