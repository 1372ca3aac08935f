"""tasks/subprocess_run.py with real child processes: the JSON result, how a failure is reported
(a refusal of the input is permanent, anything else is not), and a timeout that kills the whole
process group."""

import sys
import textwrap
import time
from pathlib import Path

import pytest
from prefect.states import Failed
from pydantic import BaseModel

from tasks.retry import BadRequest, is_transient
from tasks.subprocess_run import CommandFailed, _run_child, run_stage

pytestmark = pytest.mark.integration  # every test starts a child process


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_the_last_stdout_line_is_the_result():
    out = _run_child(_python("""
        import json, sys
        print("loading the model...")
        print("warning: slow disk", file=sys.stderr)
        print(json.dumps({"written": [0, 1], "skipped": []}))
    """), "synthesize", timeout_s=60, env=None)
    assert out == {"written": [0, 1], "skipped": []}


def test_the_child_gets_the_parent_environment_and_the_extra_variables(monkeypatch):
    monkeypatch.setenv("STABLEREP_PARENT_VARIABLE", "from-the-parent")
    out = _run_child(_python("""
        import json, os
        print(json.dumps({k: os.environ.get(k) for k in ("STABLEREP_PARENT_VARIABLE", "STABLEREP_EXTRA")}))
    """), "train", timeout_s=60, env={"STABLEREP_EXTRA": "1"})
    assert out == {"STABLEREP_PARENT_VARIABLE": "from-the-parent", "STABLEREP_EXTRA": "1"}


def test_exit_code_2_with_an_error_line_is_a_bad_request():
    with pytest.raises(BadRequest) as raised:
        _run_child(_python("""
            import sys
            print("traceback noise", file=sys.stderr)
            print("error: train.steps must be >= 1", file=sys.stderr)
            print("", file=sys.stderr)
            sys.exit(2)
        """), "train", timeout_s=60, env=None)
    assert str(raised.value) == "train.steps must be >= 1"
    assert isinstance(raised.value, ValueError)  # so the task's retry condition gives up at once


def test_exit_code_2_without_an_error_line_is_a_failure():
    with pytest.raises(CommandFailed, match=r"^the train stage exited 2: usage: stage STAGE REQUEST$"):
        _run_child(_python("""
            import sys
            print("usage: stage STAGE REQUEST", file=sys.stderr)
            sys.exit(2)
        """), "train", timeout_s=60, env=None)


def test_another_exit_code_names_the_stage_and_the_last_error_line():
    with pytest.raises(CommandFailed) as raised:
        _run_child(_python("""
            import sys
            print("error: looks like a refusal", file=sys.stderr)
            print("RuntimeError: CUDA out of memory", file=sys.stderr)
            sys.exit(1)
        """), "synthesize", timeout_s=60, env=None)
    assert str(raised.value) == "the synthesize stage exited 1: RuntimeError: CUDA out of memory"
    assert not isinstance(raised.value, ValueError)


def test_a_child_killed_by_a_signal_without_a_message():
    with pytest.raises(CommandFailed, match=r"^the train stage exited -9: no message$"):
        _run_child(_python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), "train", timeout_s=60, env=None)


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (PID 1 of a container may not reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_a_timeout_kills_the_child_and_its_children(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"^the synthesize stage ran past its 2 s timeout and was killed$"):
        _run_child(["sh", "-c", f"sleep 120 & echo $! > {pid_file}; sleep 120"], "synthesize", timeout_s=2, env=None)
    assert time.monotonic() - started < 30
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while not _gone(grandchild):  # SIGKILL went to the whole group: the grandchild too
        assert time.monotonic() < deadline, f"grandchild {grandchild} outlived the timeout"
        time.sleep(0.05)


class _Job(BaseModel):
    steps: int = 3


@pytest.mark.slow  # the child imports stablerep.stages (torch, timm, diffusers): about 8 s of CPU
def test_run_stage_runs_the_stage_cli_whose_refusal_is_a_bad_request():
    """The real `python -m stablerep.cli.stage`: a stage it does not know is refused (exit code 2,
    one `error:` line), which reaches the task as a permanent BadRequest."""
    with pytest.raises(BadRequest, match=r"^stage: 'no-such-stage' is not one of synthesize, train, evaluate, import$"
                       ) as raised:
        run_stage("no-such-stage", _Job(), timeout_s=300)
    assert is_transient(None, None, Failed(data=raised.value)) is False
