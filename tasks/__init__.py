"""Prefect tasks: thin wrappers over `stablerep` functions that add retries, timeouts and UI
artifacts. They hand each other URLs and small dicts, never tensors or images."""
