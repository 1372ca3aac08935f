"""Text tower for StableRep+ and CLIP: open_clip's text transformer and its bundled CLIP BPE."""

from __future__ import annotations

from open_clip.transformer import TextTransformer
from torch import nn

from stablerep.tokenizer import CaptionTokenizer  # re-exported: the tokenizer of this tower

__all__ = ["CaptionTokenizer", "create_text_tower"]


def create_text_tower(width: int = 512, layers: int = 12, heads: int = 8, context_length: int = 77,
                      vocab_size: int = 49408, output_dim: int = 512) -> nn.Module:
    """CLIP's text transformer (causal mask, features from the EOT token, linear projection).

    ``forward(tokens (B, L))`` -> (B, output_dim). Random init; nothing is downloaded.
    """
    return TextTransformer(context_length=context_length, vocab_size=vocab_size, width=width,
                           heads=heads, layers=layers, output_dim=output_dim, pool_type="argmax")
