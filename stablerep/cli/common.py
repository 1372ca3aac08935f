"""What every `stablerep` subcommand shares: expected failures become one line and exit code 2."""

from __future__ import annotations

import functools
import re
from typing import Any

import typer
from pydantic import ValidationError

from stablerep.config import parse_overrides
from stablerep.errors import StableRepError


class UserError(Exception):
    """An error to show as one line, without a traceback."""


# pydantic adds the member of a union it tried to a location (("compile", "bool")); readers want
# the field, so such tags are dropped from the path shown.
_UNION_TAG = re.compile(r"^(bool|int|float|str|none|dict|list|[\w-]+\[.*\])$")


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _choices(expected: str) -> list[str]:
    """pydantic's "'a', 'b' or 'c'" -> ["a", "b", "c"]."""
    return [part.strip().strip("'") for part in re.split(r", | or ", expected) if part.strip()]


def describe_error(error: dict[str, Any]) -> str:
    """One pydantic error as ``field: what was wrong``, naming the value it refused."""
    where = ".".join(str(p) for p in error["loc"] if not _UNION_TAG.match(str(p))) or "config"
    kind, value = error["type"], error.get("input")
    if kind in ("literal_error", "enum") and error.get("ctx", {}).get("expected"):
        return f"{where}: {_shown(value)} is not one of {', '.join(_choices(error['ctx']['expected']))}"
    if kind == "missing":
        return f"{where}: required, and missing"
    if kind == "extra_forbidden":
        return f"{where}: unknown field (given {_shown(value)})"
    return f"{where}: {_shown(value)} refused: {error['msg']}"


def format_validation(exc: ValidationError) -> str:
    """A ValidationError as one line: the first error, with the value refused, and how many more."""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid config: {describe_error(exc.errors()[0])}{more}"


def parse_set_options(items: list[str] | None) -> dict:
    """``--set key=value`` options as a (nested) dict: the one parser of every command's ``--set``,
    the same as the training config's overrides (``section.key=value``; values parsed as YAML:
    numbers, lists, null)."""

    try:
        return parse_overrides(list(items or []))
    except ValueError as exc:
        raise UserError(f"--set: {exc}") from None


def friendly_errors(fn):
    """Turn expected failures into ``error: ...`` on stderr and exit 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValidationError as exc:
            message = format_validation(exc)
        except (UserError, StableRepError, ValueError, OSError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)

    return wrapper
