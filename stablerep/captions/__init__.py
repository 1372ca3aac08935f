"""Caption corpora: streaming readers, normalisation, filters, stable ids, deterministic sampling."""

from stablerep.captions.normalize import CaptionFilter, caption_id, normalize_caption
from stablerep.captions.sample import SampleResult, merge_captions, sample_captions, write_captions
from stablerep.captions.sources import CaptionSourceError, RawCaption, read_captions

__all__ = [
    "CaptionFilter",
    "CaptionSourceError",
    "RawCaption",
    "SampleResult",
    "caption_id",
    "normalize_caption",
    "read_captions",
    "sample_captions",
    "write_captions",
    "merge_captions",
]
