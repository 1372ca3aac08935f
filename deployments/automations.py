"""The stack's automations for lost hosts: a flow run that goes silent is marked Crashed.

Prefect's "detect zombie flows" pattern on a self-hosted server. Flow runs send a
`prefect.flow-run.heartbeat` event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (stack.sh sets
it on the workers it starts), the first one right after they enter Running.

- crash-silent-flow-runs: after a run's Running event or heartbeat, expect another event of that
  run (a heartbeat, a state change) within ``--within`` seconds; if none comes (the host lost power,
  was preempted, its network went away: nothing is left to report a crash), set it Crashed.
- crash-flow-runs-that-never-start: after a run enters Submitting or Pending (a worker took it),
  expect it to start (or any other change) within ``--pending-within`` seconds; a host lost while
  it was submitting the run or starting its process would otherwise leave it Pending for ever.

A build-dataset fan-out then runs the crashed batch again (DatasetRequest.batch_attempts), and the
new run redoes only the shards the lost one had not committed. Choose ``--within`` as at least
three heartbeat periods and ``--pending-within`` above the slowest start of a worker's
infrastructure (an image pull, a pod waiting for a GPU node): a false alarm costs a duplicate
batch run, never data, since shards are idempotent.

    python deployments/automations.py [--within SECONDS] [--pending-within SECONDS]   # stack.sh up runs it
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.settings import get_current_settings


def _crash_when_silent(name: str, after: set[str], within_s: int, message: str) -> Automation:
    """After any ``after`` event of a flow run, expect another event of that run within ``within_s``."""
    return Automation(
        name=name,
        description=f"Mark a flow run Crashed: {message}.",
        trigger=EventTrigger(
            after=after,
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=message)],
    )


def lost_host_automations(within_s: int, pending_within_s: int) -> list[Automation]:
    """The two automations: silent running runs, and runs that never start."""
    return [_crash_when_silent("crash-silent-flow-runs", {"prefect.flow-run.Running", "prefect.flow-run.heartbeat"},
                               within_s, f"no heartbeat for {within_s} s, its host is taken for lost"),
            # a worker moves a run to Submitting (a Pending state), its process to Pending, then Running
            _crash_when_silent("crash-flow-runs-that-never-start",
                               {"prefect.flow-run.Submitting", "prefect.flow-run.Pending"}, pending_within_s,
                               f"Pending for {pending_within_s} s without starting, its host is taken for lost")]


def ensure_automation(wanted: Automation) -> Automation:
    """Create the automation, or update the one of the same name (so `make up` can run again)."""
    try:
        current = Automation.read(name=wanted.name)
    except ValueError:
        return wanted.create()
    wanted.id = current.id
    wanted.update()
    return wanted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--within", type=int, default=120, help="seconds without a heartbeat (default 120)")
    parser.add_argument("--pending-within", type=int, default=300, help="seconds Pending (default 300)")
    args = parser.parse_args()
    heartbeat = get_current_settings().flows.heartbeat_frequency
    if heartbeat is None or args.within < 2 * heartbeat:
        parser.error(f"--within {args.within} must be at least twice PREFECT_FLOWS_HEARTBEAT_FREQUENCY ({heartbeat})")
    for automation in lost_host_automations(args.within, args.pending_within):
        ensure_automation(automation)
    print(f"automations: flow runs without a heartbeat for {args.within} s (heartbeats every {heartbeat} s) "
          f"or Pending for {args.pending_within} s are marked Crashed")


if __name__ == "__main__":
    main()
