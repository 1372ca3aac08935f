"""Small fsspec helpers shared by every stage: any local path or URL (s3://, gs://, memory://).

Credentials never pass through here: fsspec/s3fs read them from the environment
(AWS_* / FSSPEC_S3_*), so they never land in parameters, logs or manifests.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from stablerep.errors import StorageError

_CREDENTIALS_HINT = ("check the credentials and endpoint in the environment "
                     "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL or FSSPEC_S3_*)")


T = TypeVar("T")
RETRIES_ENV = "STABLEREP_STORAGE_RETRIES"  # extra attempts after a transient failure (default 4)
BACKOFF_ENV = "STABLEREP_STORAGE_BACKOFF_S"  # first delay; doubles each time, +-25% jitter (default 2)


@functools.cache
def _client_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions of the S3 client stack that are not OSError (botocore's connection errors...)."""
    out: list[type[BaseException]] = []
    try:
        from botocore.exceptions import BotoCoreError

        out.append(BotoCoreError)
    except ImportError:
        pass
    try:
        from aiohttp import ClientError

        out.append(ClientError)
    except ImportError:
        pass
    return tuple(out)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: connection failures, timeouts, server errors; not missing files or denials."""
    if isinstance(exc, (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError)):
        return False
    return isinstance(exc, (OSError, TimeoutError, *_client_error_types()))


def with_retries(action: str, url: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` and retry transient store failures with exponential backoff and jitter; then
    raise StorageError naming the URL and the attempts (never a credential)."""
    retries = int(os.environ.get(RETRIES_ENV, "4"))
    delay = float(os.environ.get(BACKOFF_ENV, "2"))
    for attempt in range(retries + 1):
        try:
            with storage_errors(action, url):
                return fn()
        except StorageError as exc:
            if not exc.transient or attempt == retries:
                if attempt:
                    raise StorageError(f"{exc} (gave up after {attempt + 1} attempts)") from None
                raise
        time.sleep(delay * 2**attempt * random.uniform(0.75, 1.25))
    raise AssertionError("unreachable")


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
    except StorageError:
        raise
    except PermissionError as exc:
        raise StorageError(f"cannot {action} {url}: access denied ({exc}); {_CREDENTIALS_HINT}") from None
    except (OSError, TimeoutError, *_client_error_types()) as exc:
        error = StorageError(f"cannot {action} {url}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        error.transient = is_transient(exc)
        raise error from None


def get_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a local path or URL.

    Object stores get no listing cache: several processes commit shards side by side, and a
    cached listing would hide a mark another process has written since (or one a kill left out).
    """
    protocol, _ = fsspec.core.split_protocol(str(url))
    options = {} if protocol in (None, "file", "local") else {"use_listings_cache": False}
    fs, path = fsspec.core.url_to_fs(str(url), **options)
    return fs, path


def join(url: str, *parts: str) -> str:
    out = str(url).rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def write_bytes(url: str, data: bytes) -> None:
    """Write a whole object. Locally: temp file then rename, so a reader never sees half a file.
    On object stores: one PUT of bytes already in memory, so a failure leaves no partial object."""
    with_retries("write", url, lambda: _write_bytes(url, data))


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


def remove_partial_writes(folder: str) -> int:
    """Delete the temp files that writers SIGKILLed mid-write left in a local ``folder`` (object
    stores leave none: a PUT lands whole or not at all); returns how many. Call it only where no
    writer of that folder can still be running (after every shard is committed)."""
    fs, path = get_fs(folder)
    if not isinstance(fs, LocalFileSystem) or not fs.exists(path):
        return 0
    litter = fs.glob(f"{path.rstrip('/')}/*.tmp-*")
    for name in litter:
        fs.rm_file(name)
    return len(litter)


def read_bytes(url: str) -> bytes:
    def read() -> bytes:
        fs, path = get_fs(url)
        return fs.cat_file(path)

    return with_retries("read", url, read)


def exists(url: str) -> bool:
    def check() -> bool:
        fs, path = get_fs(url)
        return fs.exists(path)

    return with_retries("read", url, check)


def remove(url: str) -> None:
    fs, path = get_fs(url)
    if fs.exists(path):
        fs.rm(path)
