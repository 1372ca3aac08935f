import pytest


@pytest.fixture
def fast_retries(monkeypatch):
    """The flows' shard task with its retries kept but their delays removed."""
    import flows.dataset
    from tasks.synthesis import synthesize_shards

    fast = synthesize_shards.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
    monkeypatch.setattr(flows.dataset, "synthesize_shards", fast)
    return fast
