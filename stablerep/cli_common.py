"""What every `stablerep` subcommand shares: expected failures become one line and exit code 2."""

from __future__ import annotations

import functools

import typer
from pydantic import ValidationError

from stablerep.errors import StableRepError


class UserError(Exception):
    """An error to show as one line, without a traceback."""


def format_validation(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid config: {where}: {first['msg']}{more}"


def parse_set_options(items: list[str] | None) -> dict:
    """``--set key=value`` options as a dict, each value parsed as YAML (numbers, lists, null)."""
    import yaml

    fields = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--set takes key=value, got {item!r}")
        fields[key.strip()] = yaml.safe_load(raw)
    return fields


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
