"""``python -m stablerep`` (and ``torchrun -m stablerep``) runs the CLI."""

from stablerep.cli import main

main()
