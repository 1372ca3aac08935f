"""Exceptions users see, in a module that imports nothing heavy (the CLI catches them)."""


class StableRepError(Exception):
    """Base of the errors that name a problem a user can fix."""


class CheckpointError(StableRepError, RuntimeError):
    """A checkpoint that is missing, incomplete, tampered with or does not fit the model."""


class NonFiniteLossError(StableRepError, RuntimeError):
    """The loss became NaN or infinite; the run stops instead of training on garbage."""


class ShardError(StableRepError, RuntimeError):
    """A shard or mark that is missing, inconsistent or was written for another config."""


class CaptionSourceError(StableRepError, ValueError):
    """A caption file that cannot be read as asked: names the file and the line or row."""


class StorageError(StableRepError, OSError):
    """Reading or writing a URL failed (permissions, credentials, an unreachable store).
    ``transient``: a retry may succeed (connection failure, timeout), unlike a denial."""

    transient = False


class DatasetError(StableRepError, ValueError):
    """An evaluation dataset that cannot be read as asked: names the dataset and the file or field."""


class ModelNotFoundError(StableRepError, OSError):
    """The model is neither a local folder nor in the Hugging Face cache (and downloads are off)."""


class EncoderError(StableRepError, ValueError):
    """An encoder spec that cannot be loaded: unknown kind, missing weights, weights that do not fit."""


class CorpusSourceError(StableRepError, ValueError):
    """An image-caption corpus that cannot be read as asked: names the file and the member or row."""
