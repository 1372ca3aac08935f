"""tasks/leases.py: the dataset root's writer lease, held in the name of the flow run. The flow
run's name, flow and id come from Prefect's runtime overrides (PREFECT__RUNTIME__FLOW_RUN__*),
so no flow or server runs."""

import threading

import pytest

from stablerep.shards.lease import LeaseHeld, read_lease
from tasks.leases import flow_run_lease

RUN_ID = "0b7e5a52-3c1f-4f4e-9a56-2d0f1b7c9e11"


@pytest.fixture
def flow_run(monkeypatch):
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__FLOW_NAME", "build-dataset")
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__NAME", "tidy-otter")
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__ID", RUN_ID)


def _in_another_context(fn):
    """Run ``fn`` in a thread of its own (a fresh context: not inside this test's lease)."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    return out


def test_the_lease_names_the_flow_run_and_is_released_after(flow_run, tmp_path):
    root = str(tmp_path / "ds")
    with flow_run_lease(root) as lease:
        assert lease is not None
        record = read_lease(root)
        assert record["purpose"] == "build-dataset flow run tidy-otter"
        assert record["holder"]["run"] == RUN_ID and not record["released"]
    assert read_lease(root)["released"]


def test_a_second_build_is_told_which_flow_run_holds_the_root(flow_run, tmp_path, monkeypatch):
    root = str(tmp_path / "ds")
    with flow_run_lease(root):
        monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__NAME", "eager-lynx")

        def second_build():
            with flow_run_lease(root):
                return "taken"

        out = _in_another_context(second_build)
        assert isinstance(out.get("error"), LeaseHeld), out
        message = str(out["error"])
        assert "build-dataset flow run tidy-otter" in message and f"run {RUN_ID}" in message
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__NAME", "eager-lynx")
    with flow_run_lease(root):  # free again once the first run let go
        assert read_lease(root)["purpose"] == "build-dataset flow run eager-lynx"


def test_no_lease_where_leases_are_switched_off(flow_run, tmp_path, monkeypatch):
    monkeypatch.setenv("STABLEREP_WRITER_LEASE", "off")
    root = str(tmp_path / "ds")
    with flow_run_lease(root) as lease:
        assert lease is None
    assert read_lease(root) is None
