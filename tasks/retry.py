"""The retry policy every I/O task shares: exponential backoff with jitter, and no retry for
errors that a retry cannot fix (bad input, missing files, invalid configs)."""

from __future__ import annotations

from prefect.tasks import exponential_backoff

from stablerep.errors import CheckpointError

RETRIES = 3
RETRY_DELAYS = exponential_backoff(backoff_factor=5)  # 5, 10, 20 s
RETRY_JITTER = 0.5  # each delay varies by up to +-50%, so retrying workers do not stampede the store
PERMANENT = (ValueError, TypeError, KeyError, FileNotFoundError, CheckpointError)


class BadRequest(ValueError):
    """A child `stablerep` command refused its input (exit code 2): retrying cannot help."""


def is_transient(task, task_run, state) -> bool:
    """Retry unless the failure is a permanent one (see PERMANENT)."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, PERMANENT)


IO_RETRIES = {"retries": RETRIES, "retry_delay_seconds": RETRY_DELAYS, "retry_jitter_factor": RETRY_JITTER,
              "retry_condition_fn": is_transient}
