"""The `sagan` command: the composition root that wires `api/`, `worker/` and `store/` together."""
