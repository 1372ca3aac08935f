"""The retry policy every I/O task shares: exponential backoff with jitter, and no retry for
errors that a retry cannot fix (bad input, missing files, invalid configs)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from prefect.tasks import exponential_backoff

from stablerep.errors import CheckpointError

RETRIES = 3
RETRY_DELAYS = exponential_backoff(backoff_factor=5)  # 5, 10, 20 s
RETRY_JITTER = 0.5  # each delay varies by up to +-50%, so retrying workers do not stampede the store
PERMANENT = (ValueError, TypeError, KeyError, FileNotFoundError, CheckpointError)
T = TypeVar("T")


class BadRequest(ValueError):
    """A child `stablerep` command refused its input (exit code 2): retrying cannot help."""


def is_transient(task, task_run, state) -> bool:
    """Retry unless the failure is a permanent one (see PERMANENT)."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, PERMANENT)


IO_RETRIES = {"retries": RETRIES, "retry_delay_seconds": RETRY_DELAYS, "retry_jitter_factor": RETRY_JITTER,
              "retry_condition_fn": is_transient}


def is_transient_api_error(exc: BaseException) -> bool:
    """A Prefect API call worth repeating: the server busy or away (5xx, 408, 429, no connection)."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in (408, 429) or exc.response.status_code >= 500
    return isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError))


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("stablerep.flows")


def with_api_retries(what: str, call: Callable[[], T], attempts: int = 6, delay_s: float = 5.0) -> T:
    """``call()``, repeated with exponential backoff and jitter while the API fails transiently.

    Prefect's client already retries a 503 five times over about a minute; a server on SQLite under
    load ("database is locked") was measured answering 503 for longer, and a fan-out must not lose
    a whole build to that. Only idempotent calls belong here (reads, idempotency-keyed creates)."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if not is_transient_api_error(exc) or attempt == attempts - 1:
                raise
            delay = delay_s * 2**attempt * random.uniform(0.75, 1.25)
            _logger().warning("%s: %s; trying again in %.0f s (attempt %d of %d)", what, str(exc).splitlines()[0],
                              delay, attempt + 2, attempts)
            time.sleep(delay)
    raise AssertionError("unreachable")
