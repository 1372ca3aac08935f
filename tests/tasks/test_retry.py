"""tasks/retry.py: which failures a task retries, the shared retry settings, and the API-call retry loop."""

import logging

import httpx
import pytest
from prefect.states import Failed

from stablerep.errors import CaptionSourceError, CheckpointError, StorageError
from tasks import captions, corpora, evaluation, synthesis, training
from tasks.retry import (
    IO_RETRIES,
    RETRIES,
    RETRY_JITTER,
    BadRequest,
    is_transient,
    is_transient_api_error,
    with_api_retries,
)
from tasks.subprocess_run import CommandFailed


def _status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/flow_runs/filter")
    return httpx.HTTPStatusError(f"{code}", request=request, response=httpx.Response(code, request=request))


@pytest.mark.parametrize("exc", [ValueError("bad"), TypeError("t"), KeyError("k"), FileNotFoundError("gone"),
                                 CheckpointError("torn"), BadRequest("refused"), CaptionSourceError("line 3")])
def test_permanent_failures_are_not_retried(exc):
    # BadRequest and CaptionSourceError are ValueErrors: a child's refusal and bad input stay permanent
    assert is_transient(None, None, Failed(data=exc)) is False


@pytest.mark.parametrize("exc", [ConnectionError("reset"), TimeoutError("killed"), CommandFailed("exited -9"),
                                 StorageError("unreachable"), RuntimeError("oom"), OSError("EIO")])
def test_transient_failures_are_retried(exc):
    assert is_transient(None, None, Failed(data=exc)) is True


def test_backoff_doubles_from_five_seconds_with_jitter():
    assert IO_RETRIES["retries"] == RETRIES == 3
    assert IO_RETRIES["retry_delay_seconds"](RETRIES) == [5, 10, 20]
    assert IO_RETRIES["retry_jitter_factor"] == RETRY_JITTER == 0.5
    assert IO_RETRIES["retry_condition_fn"] is is_transient


@pytest.mark.parametrize("task", [captions.sample_captions, captions.procedural_captions, captions.copy_captions,
                                  corpora.open_import, corpora.index_input, corpora.plan_import, corpora.write_input,
                                  corpora.finish_import, corpora.import_corpus, synthesis.plan_shards,
                                  synthesis.synthesize_shards, synthesis.write_manifest, training.train_encoder,
                                  evaluation.evaluate_suite, evaluation.compare_encoders], ids=lambda t: t.name)
def test_every_io_task_takes_the_shared_policy(task):
    assert task.retries == 3 and task.retry_delay_seconds == [5, 10, 20]
    assert task.retry_jitter_factor == 0.5 and task.retry_condition_fn is is_transient


@pytest.mark.parametrize("code, transient", [(500, True), (502, True), (503, True), (504, True), (408, True),
                                             (429, True), (400, False), (401, False), (403, False), (404, False),
                                             (409, False), (422, False)])
def test_api_errors_by_status(code, transient):
    assert is_transient_api_error(_status_error(code)) is transient


def test_api_errors_by_kind():
    request = httpx.Request("GET", "http://127.0.0.1:4200/api/health")
    assert is_transient_api_error(httpx.ConnectError("refused", request=request))
    assert is_transient_api_error(httpx.ReadTimeout("slow", request=request))
    assert is_transient_api_error(httpx.RemoteProtocolError("closed", request=request))
    assert is_transient_api_error(ConnectionResetError())
    assert is_transient_api_error(TimeoutError())
    assert not is_transient_api_error(ValueError("bad request body"))
    assert not is_transient_api_error(RuntimeError("bug"))


class Flaky:
    """A call that raises each of ``errors`` in turn, then returns ``value``."""

    def __init__(self, errors, value="done"):
        self.errors, self.value, self.calls = list(errors), value, 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def test_api_retries_repeat_transient_failures_until_success(caplog):
    call = Flaky([_status_error(503), httpx.ConnectError("refused"), _status_error(429)], value={"id": 7})
    with caplog.at_level(logging.WARNING, logger="stablerep.flows"):
        assert with_api_retries("read flow run", call, attempts=4, delay_s=0) == {"id": 7}
    assert call.calls == 4
    warnings = [r.getMessage() for r in caplog.records if r.name == "stablerep.flows"]
    assert len(warnings) == 3
    assert warnings[0].startswith("read flow run: 503") and warnings[0].endswith("(attempt 2 of 4)")
    assert warnings[-1].endswith("(attempt 4 of 4)")


def test_api_retries_give_up_after_the_last_attempt():
    last = _status_error(500)
    call = Flaky([_status_error(503), _status_error(502), last, _status_error(503)])
    with pytest.raises(httpx.HTTPStatusError) as raised:
        with_api_retries("create flow run", call, attempts=3, delay_s=0)
    assert raised.value is last and call.calls == 3


def test_api_retries_do_not_repeat_a_permanent_failure():
    call = Flaky([_status_error(404)])
    with pytest.raises(httpx.HTTPStatusError, match="404"):
        with_api_retries("read deployment", call, attempts=6, delay_s=0)
    assert call.calls == 1
    call = Flaky([KeyError("id")])
    with pytest.raises(KeyError):
        with_api_retries("read deployment", call, delay_s=0)
    assert call.calls == 1


def test_api_retries_wait_longer_each_time(monkeypatch):
    import tasks.retry

    slept = []
    monkeypatch.setattr(tasks.retry.time, "sleep", slept.append)  # the clock, not our code
    call = Flaky([_status_error(503)] * 4)
    assert with_api_retries("read", call, attempts=5, delay_s=2.0) == "done"
    assert len(slept) == 4
    for attempt, delay in enumerate(slept):  # 2 * 2**attempt, within the +-25% jitter
        assert 0.75 * 2 * 2**attempt <= delay <= 1.25 * 2 * 2**attempt

