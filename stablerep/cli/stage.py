"""`python -m stablerep.cli.stage STAGE REQUEST.json`: one stage of stablerep.stages in this
process, from the request a parent serialized (validated by the stage's own model, no option
parsing). The last stdout line is the stage's JSON result (one per node under torchrun: local
rank 0 prints); a request the stage refuses is one `error:` line on stderr and exit code 2."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import typer

from stablerep.cli.common import UserError, friendly_errors
from stablerep.stages import STAGES


@friendly_errors
def run_stage(stage: str, request_file: str) -> None:
    if stage not in STAGES:
        raise UserError(f"stage: {stage!r} is not one of {', '.join(STAGES)}")
    model, fn = STAGES[stage]
    job = model.model_validate_json(Path(request_file).read_text(encoding="utf-8"))
    result = fn(job)
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m stablerep.cli.stage STAGE REQUEST.json", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        run_stage(*args)
    except typer.Exit as exc:  # friendly_errors' exit code, outside a typer app
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
