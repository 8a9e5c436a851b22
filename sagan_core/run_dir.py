"""A local run directory's metrics.jsonl and sample grids: what the CLI keeps beside checkpoints.

runs/digits/checkpoints/step-0001000.pt   written by the Trainer (sagan_core.checkpoint)
runs/digits/metrics.jsonl                 one JSON object per log event (RunDirectoryWriter)
runs/digits/samples/step-0001000.png      the periodic sample grids (RunDirectoryWriter)
"""

from __future__ import annotations

import json
from pathlib import Path

from .trainer import TrainerCallbacks


class RunDirectoryWriter(TrainerCallbacks):
    """Keeps a run's metrics and sample grids as files beside its checkpoints."""

    def __init__(self, run_dir: Path | str):
        self.run_dir = Path(run_dir)

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    def on_samples(self, step: int, png: bytes) -> None:
        out = self.run_dir / "samples" / f"step-{step:07d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png)
