"""Run a `stablerep` command in a child process with a timeout that really stops it.

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
from typing import Any

from tasks.retry import BadRequest


class CommandFailed(RuntimeError):
    """The child died or failed (not a refusal of its input); the message is its last error line."""


def run_stablerep(args: list[str], timeout_s: float | None, env: dict[str, str] | None = None,
                  torchrun: list[str] | None = None) -> dict[str, Any]:
    """``python -m stablerep ARGS`` (or, with ``torchrun`` options, the same under
    ``torch.distributed.run``); returns the JSON its last stdout line prints."""
    launcher = ["-m", "torch.distributed.run", *torchrun] if torchrun is not None else []
    cmd = [sys.executable, *launcher, "-m", "stablerep", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TimeoutError(f"`stablerep {args[0]}` ran past its {timeout_s:.0f} s timeout and was killed") from None
    except BaseException:  # the task itself is being cancelled: take the child down with it
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        if proc.returncode == 2 and lines and lines[-1].startswith("error: "):
            raise BadRequest(lines[-1].removeprefix("error: "))
        raise CommandFailed(f"`stablerep {args[0]}` exited {proc.returncode}: "
                            f"{lines[-1] if lines else 'no message'}")
    return json.loads(out.strip().splitlines()[-1])
