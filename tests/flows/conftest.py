import os

import pytest


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server (SQLite) for every flow test of the session."""
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def fast_retries(monkeypatch):
    """The flows' shard task with its retries kept but their delays removed."""
    import flows.dataset
    from tasks.synthesis import synthesize_shards

    fast = synthesize_shards.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
    monkeypatch.setattr(flows.dataset, "synthesize_shards", fast)
    return fast
