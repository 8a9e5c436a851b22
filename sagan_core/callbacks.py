"""What a training run reports to, and asks: metrics, checkpoints, samples, and whether to stop.
The trainer knows no storage; the worker's callbacks write rows and upload files, the CLI's draw a
progress bar and write the run directory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


class TrainerCallbacks:
    """Override any of these; the trainer calls them from its own thread, in step order."""

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_checkpoint(self, step: int, path: Path, tags: set[str]) -> None:
        pass

    def should_stop(self, step: int) -> bool:
        return False

    def on_samples(self, step: int, png: bytes) -> None:
        pass

    def on_note(self, step: int, message: str) -> None:
        """Something the user should know that is not a metric (a fallback, a recipe choice)."""

    def on_warning(self, step: int, message: str) -> None:
        """The run may not be learning (sagan_core.collapse): shown apart from plain notes."""
        self.on_note(step, message)

    def on_protocol(self, step: int, protocol: dict) -> None:
        """How the scores written at `step` were measured (sagan_core.evaluate.protocol)."""


class CallbackList(TrainerCallbacks):
    """Several callbacks as one: each hears every event; any one of them can stop the run."""

    def __init__(self, callbacks: Sequence[TrainerCallbacks]):
        self.callbacks = list(callbacks)

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for c in self.callbacks:
            c.on_metrics(step, metrics)

    def on_checkpoint(self, step: int, path: Path, tags: set[str]) -> None:
        for c in self.callbacks:
            c.on_checkpoint(step, path, tags)

    def should_stop(self, step: int) -> bool:
        return any([c.should_stop(step) for c in self.callbacks])  # every one sees every step

    def on_samples(self, step: int, png: bytes) -> None:
        for c in self.callbacks:
            c.on_samples(step, png)

    def on_note(self, step: int, message: str) -> None:
        for c in self.callbacks:
            c.on_note(step, message)

    def on_warning(self, step: int, message: str) -> None:
        for c in self.callbacks:
            c.on_warning(step, message)

    def on_protocol(self, step: int, protocol: dict) -> None:
        for c in self.callbacks:
            c.on_protocol(step, protocol)


# What an evaluator is: (step, G_ema) -> metrics such as {"is": ..., "fid": ...}.
Evaluator = Callable[[int, torch.nn.Module], dict[str, float]]


class DivergedError(RuntimeError):
    def __init__(self, step: int, detail: str = ""):
        super().__init__(
            f"training diverged at step {step}: non-finite loss{f' ({detail})' if detail else ''}"
        )
        self.step = step


@dataclass
class TrainResult:
    step: int
    stopped: bool
    last_checkpoint: Path | None
