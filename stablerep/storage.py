"""Small fsspec helpers shared by every stage: any local path or URL (s3://, gs://, memory://).

Credentials never pass through here: fsspec/s3fs read them from the environment
(AWS_* / FSSPEC_S3_*), so they never land in parameters, logs or manifests.
"""

from __future__ import annotations

import contextlib
import os
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

from stablerep.errors import StorageError

_CREDENTIALS_HINT = ("check the credentials and endpoint in the environment "
                     "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL or FSSPEC_S3_*)")


@contextlib.contextmanager
def storage_errors(action: str, url: str):
    """Re-raise permission and connection failures as StorageError naming the URL.

    FileNotFoundError passes through unchanged; secrets never appear (the URL holds none, and
    messages from the store name no key).
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except PermissionError as exc:
        raise StorageError(f"cannot {action} {url}: access denied ({exc}); {_CREDENTIALS_HINT}") from None
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise StorageError(f"cannot {action} {url}: {exc}") from None


def get_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a local path or URL."""
    fs, path = fsspec.core.url_to_fs(str(url))
    return fs, path


def join(url: str, *parts: str) -> str:
    out = str(url).rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def write_bytes(url: str, data: bytes) -> None:
    """Write a whole object. Locally: temp file then rename, so a reader never sees half a file.
    On object stores: one PUT of bytes already in memory, so a failure leaves no partial object."""
    with storage_errors("write", url):
        _write_bytes(url, data)


def _write_bytes(url: str, data: bytes) -> None:
    fs, path = get_fs(url)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        fs.pipe_file(path, data)


def read_bytes(url: str) -> bytes:
    with storage_errors("read", url):
        fs, path = get_fs(url)
        return fs.cat_file(path)


def exists(url: str) -> bool:
    with storage_errors("read", url):
        fs, path = get_fs(url)
        return fs.exists(path)


def remove(url: str) -> None:
    fs, path = get_fs(url)
    if fs.exists(path):
        fs.rm(path)
