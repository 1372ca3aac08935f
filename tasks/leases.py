"""The dataset root's writer lease, held by a flow run (the flows take it here, never from the core
directly): the owner and run the lease names are the flow run's, so a second build that finds the
root held is told which run in the Prefect UI holds it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.runtime import flow_run

from stablerep.shards.lease import WriterLease, writer_lease


@contextmanager
def flow_run_lease(root: str, wait_s: float = 0) -> Iterator[WriterLease | None]:
    """Hold ``root``'s writer lease for the current flow run; wait up to ``wait_s`` for another
    holder, then fail naming it. Yields None where leases are switched off."""
    owner = f"{flow_run.flow_name} flow run {flow_run.name}"
    with writer_lease(root, owner, run=str(flow_run.id), wait_s=wait_s) as lease:
        yield lease
