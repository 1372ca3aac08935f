"""A writer lease on a dataset root: one build at a time extends its captions, plan and manifest.

The lease is one small object, ROOT/_writer_lease.json, that names its holder (host, pid, run)
and an expiry, and that is only ever changed by compare-and-swap:

- on S3, a PUT with ``If-None-Match: *`` creates it and a PUT with ``If-Match: <ETag>`` renews,
  takes over or releases it, so of two writers racing for it exactly one wins;
- in a local directory, the read-compare-write runs under an ``flock`` of ROOT/_writer_lease.lock
  (held for the few microseconds of the swap, never for the lease itself).

The holder renews it every third of its time to live from a background thread and releases it on
exit; a holder that dies stops renewing, and its lease is free once it expires (or at once, when
the holder ran on this very host and its process is gone). Other stores have no conditional write
that fsspec exposes: taking a lease there fails unless ``STABLEREP_WRITER_LEASE=off``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from stablerep import storage
from stablerep.errors import StableRepError

LEASE_FILE = "_writer_lease.json"
TTL_ENV = "STABLEREP_LEASE_TTL_S"  # seconds a lease lives without renewal (default 60)
WAIT_ENV = "STABLEREP_LEASE_WAIT_S"  # how long a second writer waits for the lease (default 0: fail at once)
SWITCH_ENV = "STABLEREP_WRITER_LEASE"  # "off": write without a lease (stores without conditional writes)


class LeaseHeld(StableRepError, RuntimeError):
    """Another writer holds the dataset root's lease; the message names it."""


class LeaseLost(StableRepError, RuntimeError):
    """This writer's lease expired or was taken over: it must not change the dataset any more."""


class _Conflict(Exception):
    """A conditional write lost its race (the object exists, or changed since it was read)."""


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot, so that a reused pid is not
    mistaken for the holder; None when it is gone or a zombie (killed, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _host_identity() -> str | None:
    """Host, boot and pid namespace: processes that share it see each other's pids."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        return f"{socket.gethostname()}/{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def holder_is_dead(holder: dict[str, Any]) -> bool:
    """True when the holder ran in this host's pid namespace and its process is gone."""
    here = _host_identity()
    if here is None or holder.get("identity") != here:
        return False
    return _proc_start(int(holder["pid"])) != holder.get("started")


def describe(record: dict[str, Any]) -> str:
    """``<purpose> (host H, pid P, run R) since T, valid until E`` for messages."""
    h = record["holder"]
    run = f", run {h['run']}" if h.get("run") else ""
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record["expires_at"]))
    return f"{record['purpose']} (host {h['host']}, pid {h['pid']}{run}) since {record['acquired']}, valid until {until}"


class _S3Store:
    """Compare-and-swap with S3 conditional PUTs; versions are ETags."""

    def __init__(self, fs: Any, path: str):
        self.fs, self.path = fs, path

    def read(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            etag = self.fs.info(self.path, refresh=True)["ETag"]
            return json.loads(self.fs.cat_file(self.path)), etag
        except FileNotFoundError:
            return None, None

    def _put(self, data: bytes, **condition: str) -> str:
        try:
            out = self.fs.pipe_file(self.path, data, **condition)
        except (FileExistsError, FileNotFoundError):
            raise _Conflict from None
        except OSError as exc:
            response = getattr(exc.__cause__, "response", None) or {}
            if response.get("Error", {}).get("Code") == "PreconditionFailed" or \
                    response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
                raise _Conflict from None  # SeaweedFS omits the field that makes s3fs say FileExistsError
            raise
        return (out or {}).get("ETag") or self.fs.info(self.path, refresh=True)["ETag"]

    def create(self, data: bytes) -> str:
        return self._put(data, mode="create")

    def replace(self, data: bytes, version: str) -> str:
        return self._put(data, IfMatch=version)


class _LocalStore:
    """Compare-and-swap in a local directory: read, compare and replace under an flock."""

    def __init__(self, path: str):
        self.path = path
        self.guard = path.removesuffix(".json") + ".lock"

    def read(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None, None
        return json.loads(text), text

    def _swap(self, data: bytes, expected: str | None) -> str:
        import fcntl

        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.guard, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.read()[1] != expected:
                raise _Conflict
            tmp = f"{self.path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            os.close(fd)  # releases the flock
        return data.decode()

    def create(self, data: bytes) -> str:
        return self._swap(data, None)

    def replace(self, data: bytes, version: str) -> str:
        return self._swap(data, version)


def _open_store(root: str) -> _S3Store | _LocalStore:
    from fsspec.implementations.local import LocalFileSystem

    url = storage.join(root, LEASE_FILE)
    fs, path = storage.get_fs(url)
    if isinstance(fs, LocalFileSystem):
        return _LocalStore(path)
    if "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return _S3Store(fs, path)
    raise storage.StorageError(f"cannot take a writer lease on {root}: {type(fs).__name__} offers no conditional "
                               f"write; set {SWITCH_ENV}=off to build without one (one writer at a time)")


@dataclass
class _Held:
    record: dict[str, Any]
    version: str
    deadline: float  # time.monotonic() after which this holder no longer trusts its lease


class WriterLease:
    """The writer lease of dataset ``root``: ``with WriterLease(root, "stablerep synthesize"):``.

    ``wait_s`` bounds how long to wait for another holder (default ``$STABLEREP_LEASE_WAIT_S`` or 0);
    ``ttl_s`` is how long the lease outlives its last renewal (default ``$STABLEREP_LEASE_TTL_S`` or 60).
    """

    def __init__(self, root: str, purpose: str, *, run: str | None = None, wait_s: float | None = None,
                 ttl_s: float | None = None):
        self.root, self.purpose, self.run = root, purpose, run
        self.wait_s = float(os.environ.get(WAIT_ENV, "0")) if wait_s is None else wait_s
        self.ttl_s = float(os.environ.get(TTL_ENV, "60")) if ttl_s is None else ttl_s
        if self.ttl_s <= 0 or self.wait_s < 0:
            raise ValueError(f"lease ttl must be > 0 and wait >= 0 (got ttl {self.ttl_s}, wait {self.wait_s})")
        self.url = storage.join(root, LEASE_FILE)
        self._store = _open_store(root)
        self._token = uuid.uuid4().hex
        self._held: _Held | None = None
        self._lost: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- the record ---------------------------------------------------------------------------
    def _record(self, acquired: str | None = None, released: bool = False) -> dict[str, Any]:
        now = time.time()
        return {"token": self._token, "purpose": self.purpose,
                "holder": {"host": socket.gethostname(), "pid": os.getpid(), "started": _proc_start(os.getpid()),
                           "identity": _host_identity(), "run": self.run},
                "acquired": acquired or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                "renewed_at": now, "expires_at": now if released else now + self.ttl_s,
                "ttl_s": self.ttl_s, "released": released}

    def _write(self, record: dict[str, Any], version: str | None, retry: bool = True) -> str:
        """Create (version None) or swap the record; a lost response is recognised by its token.
        Transient store failures are retried unless ``retry`` is False."""
        data = json.dumps(record, indent=1).encode()

        def attempt() -> str:
            try:
                return self._store.create(data) if version is None else self._store.replace(data, version)
            except _Conflict:
                current, current_version = self._store.read()
                if current == record:  # our own write landed, its response did not
                    return current_version
                raise

        if not retry:
            with storage.storage_errors("write", self.url):
                return attempt()
        return storage.with_retries("write", self.url, attempt)

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        return storage.with_retries("read", self.url, self._store.read)

    # -- acquire, renew, release ---------------------------------------------------------------
    def _try_acquire(self) -> dict[str, Any] | None:
        """Take the lease if it is free; else return the current holder's record."""
        current, version = self._read()
        free = (current is None or current.get("released") or current["expires_at"] < time.time()
                or holder_is_dead(current["holder"]))
        if not free:
            return current
        record = self._record()
        started = time.monotonic()
        try:
            new_version = self._write(record, version)
        except _Conflict:
            return self._read()[0] or self._record()  # someone else won this round
        self._held = _Held(record, new_version, started + self.ttl_s * 0.9)
        return None

    def acquire(self) -> WriterLease:
        """Take the lease, waiting up to ``wait_s`` for the holder; raise LeaseHeld naming it."""
        deadline = time.monotonic() + self.wait_s
        while True:
            holder = self._try_acquire()
            if holder is None:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                waited = f" (waited {self.wait_s:.0f} s)" if self.wait_s else ""
                raise LeaseHeld(f"dataset root {self.root} is being written by {describe(holder)}{waited}; "
                                f"wait for it to finish ({WAIT_ENV} or the request's lease_wait_s) "
                                "or write to another root")
            time.sleep(min(left, random.uniform(0.5, 1.5) * min(2.0, self.ttl_s / 4)))
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lease-{self.root}", daemon=True)
        self._renewer.start()
        return self

    def renew(self) -> None:
        """Push the expiry one time-to-live ahead; LeaseLost when another writer took over."""
        with self._lock:
            held = self._held
            if held is None or self._lost:
                raise LeaseLost(self._lost or f"no writer lease held on {self.root}")
            record = self._record(acquired=held.record["acquired"])
            started = time.monotonic()
            try:
                version = self._write(record, held.version)
            except _Conflict:
                self._lost = f"the writer lease on {self.root} was taken over by another writer"
                raise LeaseLost(self._lost) from None
            self._held = _Held(record, version, started + self.ttl_s * 0.9)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except LeaseLost:
                return
            except storage.StorageError as exc:  # the store is away: retry until the lease runs out
                held = self._held
                if held is None or time.monotonic() > held.deadline:
                    self._lost = f"the writer lease on {self.root} expired: could not renew it ({exc})"
                    return

    def ensure_held(self) -> None:
        """Raise LeaseLost unless this writer still holds the lease (check before changing metadata)."""
        held = self._held
        if self._lost or held is None:
            raise LeaseLost(self._lost or f"no writer lease held on {self.root}")
        if time.monotonic() > held.deadline:
            raise LeaseLost(f"the writer lease on {self.root} ran out before it could be renewed")

    def release(self) -> None:
        """Mark the lease free (if it is still ours), in one attempt: a run failing because its store
        is gone should not wait for it here. Never raises: an unreleased lease expires."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=30)
        with self._lock:
            held, self._held = self._held, None
            if held is None or self._lost:
                return
            with contextlib.suppress(_Conflict, storage.StorageError):
                self._write(self._record(acquired=held.record["acquired"], released=True), held.version, retry=False)

    def __enter__(self) -> WriterLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_HELD: contextvars.ContextVar[dict[str, WriterLease] | None] = contextvars.ContextVar("stablerep_leases", default=None)


def _key(root: str) -> str:
    return str(root).rstrip("/")


@contextlib.contextmanager
def writer_lease(root: str, purpose: str, *, run: str | None = None,
                 wait_s: float | None = None) -> Iterator[WriterLease | None]:
    """Hold the writer lease of ``root`` for the block. Re-entrant: code running inside another
    ``writer_lease(root)`` block of this context (threads started with its context included)
    reuses that lease, and checks it is still held. Yields None when leases are switched off."""
    if os.environ.get(SWITCH_ENV, "on").lower() in ("off", "0", "false", "no"):
        yield None
        return
    held = _HELD.get() or {}
    if _key(root) in held:
        lease = held[_key(root)]
        lease.ensure_held()
        yield lease
        return
    with WriterLease(root, purpose, run=run, wait_s=wait_s) as lease:
        token = _HELD.set({**held, _key(root): lease})
        try:
            yield lease
        finally:
            _HELD.reset(token)


def held_lease(root: str) -> WriterLease | None:
    """The lease this context holds on ``root``, if any."""
    return (_HELD.get() or {}).get(_key(root))


def read_lease(root: str) -> dict[str, Any] | None:
    """The current lease record of ``root`` (None if no build ever took one)."""
    return _open_store(root).read()[0]
