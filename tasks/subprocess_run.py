"""Run a stage of stablerep.stages in a child process with a timeout that really stops it.

Prefect's task timeout cannot interrupt synchronous code in a worker thread, so shard work runs
in a child process in its own process group: on timeout the whole group gets SIGKILL, and the
shard marks make the retry redo only what was not committed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.retry import BadRequest


class CommandFailed(RuntimeError):
    """The child died or failed (not a refusal of its input); the message is its last error line."""


def run_stage(stage: str, job: BaseModel, timeout_s: float | None, env: dict[str, str] | None = None,
              torchrun: list[str] | None = None) -> dict[str, Any]:
    """``stablerep.stages.<stage>(job)`` in a child process (or, with ``torchrun`` options, in each
    rank under ``torch.distributed.run``): the job travels as its JSON, validated there by the same
    model; returns the JSON result the child prints last."""
    with tempfile.TemporaryDirectory(prefix="stablerep-stage-") as tmp:
        request = Path(tmp) / "request.json"
        request.write_text(job.model_dump_json(), encoding="utf-8")
        launcher = ["-m", "torch.distributed.run", *torchrun] if torchrun is not None else []
        cmd = [sys.executable, *launcher, "-m", "stablerep.cli.stage", stage, str(request)]
        return _run_child(cmd, stage, timeout_s, env)


def _run_child(cmd: list[str], stage: str, timeout_s: float | None, env: dict[str, str] | None) -> dict[str, Any]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TimeoutError(f"the {stage} stage ran past its {timeout_s:.0f} s timeout and was killed") from None
    except BaseException:  # the task itself is being cancelled: take the child down with it
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        if proc.returncode == 2 and lines and lines[-1].startswith("error: "):
            raise BadRequest(lines[-1].removeprefix("error: "))
        raise CommandFailed(f"the {stage} stage exited {proc.returncode}: {lines[-1] if lines else 'no message'}")
    return json.loads(out.strip().splitlines()[-1])
