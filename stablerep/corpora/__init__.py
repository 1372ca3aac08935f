"""Readers of real image-caption corpora for import: img2dataset's webdataset and parquet
output, any WebDataset tar, Hugging Face ``datasets`` Parquet, and CSV/TSV of image paths."""

from stablerep.corpora.images import check_image, sniff_ext
from stablerep.corpora.inputs import FORMATS, CorpusInput, resolve_inputs
from stablerep.corpora.readers import CorpusSample, iter_samples, read_images
from stablerep.errors import CorpusSourceError

__all__ = [
    "FORMATS",
    "CorpusInput",
    "CorpusSample",
    "CorpusSourceError",
    "check_image",
    "iter_samples",
    "read_images",
    "resolve_inputs",
    "sniff_ext",
]
