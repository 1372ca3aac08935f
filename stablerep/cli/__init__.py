"""The ``stablerep`` command, one module per command group: ``app`` (the root command, `train`
and `config`), ``data`` (`captions`, `dataset`), ``synthesis`` (`synthesize`, `captions
procedural`), ``evaluate``, ``demo`` (`demo`, `compare`), ``generator``; ``common`` holds what
they share (the one ``--set`` parser, one-line user errors with exit code 2)."""

from stablerep.cli.app import app, main

__all__ = ["app", "main"]
