"""Device and precision resolution now live one floor down, in :mod:`stablerep.devices`; kept here
so that ``stablerep.training.precision`` imports keep working."""

from stablerep.devices import autocast, resolve_device, resolve_dtype

__all__ = ["autocast", "resolve_device", "resolve_dtype"]
