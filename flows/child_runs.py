"""Flow runs of other deployments started by a parent flow: start, wait for all, cancel.

Shard batches (`build-dataset` with ``fan_out: deployment``) and training nodes (`train-encoder`
with ``nnodes > 1``) both go out as flow runs of a deployment on a work pool; the parent polls
their states in one request per round and reacts as each one ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import FlowRun

from tasks.retry import with_api_retries

POLL_S = 2.0
API_PAGE = 200  # the API returns at most this many runs per request


def start_child_run(deployment: str, parameters: dict[str, Any], key: str, name: str | None = None) -> UUID:
    """One flow run of ``deployment`` (named ``name``) as a subflow of the current flow run, shown
    under it in the UI; ``key`` makes a retried parent reuse the run it already created."""
    from prefect.context import get_run_context
    from prefect.deployments import run_deployment

    parent = get_run_context().flow_run.id
    run = with_api_retries(f"starting a run of {deployment} ({key})", lambda: run_deployment(
        deployment, timeout=0, as_subflow=True, idempotency_key=f"{parent}-{key}", parameters=parameters,
        flow_run_name=name))
    return run.id


def wait_for_runs(ids: list[UUID], on_final: Callable[[FlowRun], Any]) -> None:
    """Poll until every run is final, calling ``on_final(run)`` once per run as it ends. It may
    return False to stop early (the runs still pending are left as they are) or a list of new run
    ids to wait for as well (a batch run again). Polls survive a busy API (with_api_retries)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    pending = list(ids)
    with get_client(sync_client=True) as client:
        while pending:
            time.sleep(POLL_S)
            page = pending[:API_PAGE]
            runs = with_api_retries("reading child flow runs", lambda page=page: client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)), limit=len(page)))
            for run in runs:
                if run.state is None or not run.state.is_final():
                    continue
                pending.remove(run.id)
                answer = on_final(run)
                if answer is False:
                    return
                if isinstance(answer, list):
                    pending.extend(answer)


def cancel_runs(ids: list[UUID], reason: str, wait_s: float = 120) -> dict[UUID, str]:
    """Cancel every run of ``ids`` that has not ended: a run not yet started is cancelled at once,
    a running one is set Cancelling so its worker stops its process or container. Waits up to
    ``wait_s`` for them to end; returns each run's final state name (or the last one seen)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.states import Cancelled, Cancelling

    states: dict[UUID, str] = {}
    with get_client(sync_client=True) as client:
        for run_id in ids:
            state = client.read_flow_run(run_id).state
            if state is not None and state.is_final():
                states[run_id] = state.name
                continue
            started = state is not None and not state.is_scheduled()
            client.set_flow_run_state(run_id, Cancelling(message=reason) if started else Cancelled(message=reason),
                                      force=True)
        deadline = time.monotonic() + wait_s
        left = [i for i in ids if i not in states]
        while left:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=left)),
                                         limit=len(left))
            for run in runs:
                states[run.id] = run.state.name if run.state else "unknown"
                if run.state is not None and run.state.is_final():
                    left.remove(run.id)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
    return states
