"""The stack's automation for lost hosts: a flow run whose heartbeats stop is marked Crashed.

Prefect's "detect zombie flows" pattern on a self-hosted server. Flow runs send a
`prefect.flow-run.heartbeat` event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (stack.sh sets
it on the workers it starts). After each heartbeat of a run, this automation expects another one,
or a final state, within ``--within`` seconds; when none comes (the host lost power, was preempted,
or its network went away: nothing is left to report a crash), it sets the run Crashed. A
build-dataset fan-out then runs that batch again (DatasetRequest.batch_attempts), and the new run
redoes only the shards the lost one had not committed.

    python deployments/automations.py [--within SECONDS]   # stack.sh up runs it; idempotent

Pick ``--within`` as at least three heartbeat periods, so that a busy host is not taken for a
lost one (a false alarm costs a duplicate batch run, never data: shards are idempotent).
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

NAME = "crash-silent-flow-runs"


def silent_run_automation(within_s: int) -> Automation:
    """The automation: after a heartbeat, another heartbeat or a final state within ``within_s``."""
    return Automation(
        name=NAME,
        description=f"Mark a flow run Crashed when it sends no heartbeat for {within_s} s (its host is lost).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"No heartbeat for {within_s} s: the run's host is lost")],
    )


def ensure_automation(within_s: int) -> Automation:
    """Create the automation, or update the one of the same name (so `make up` can run again)."""
    wanted = silent_run_automation(within_s)
    try:
        current = Automation.read(name=NAME)
    except ValueError:
        return wanted.create()
    wanted.id = current.id
    wanted.update()
    return wanted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--within", type=int, default=120, help="seconds without a heartbeat (default 120)")
    args = parser.parse_args()
    heartbeat = get_current_settings().flows.heartbeat_frequency
    if heartbeat is None or args.within < 2 * heartbeat:
        parser.error(f"--within {args.within} must be at least twice PREFECT_FLOWS_HEARTBEAT_FREQUENCY ({heartbeat})")
    automation = ensure_automation(args.within)
    print(f"automation {automation.name}: flow runs silent for {args.within} s are marked Crashed "
          f"(heartbeats every {heartbeat} s)")


if __name__ == "__main__":
    main()
