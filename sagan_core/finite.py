"""The fast path's check for a diverged run without a host sync per step: the first step whose
d_loss or g_loss is not finite is remembered on the device and read only when the run reports or
saves something."""

from __future__ import annotations

import math

import torch

from .callbacks import DivergedError


class FiniteWatch:
    def __init__(self) -> None:
        self.bad_step: torch.Tensor | None = None  # 0: none yet
        self.bad_losses: torch.Tensor | None = None

    @torch.no_grad()
    def note(self, step: int, stats: dict[str, torch.Tensor]) -> None:
        """Remember, on the device, the first step whose d_loss or g_loss is not finite."""
        losses = torch.stack([stats["d_loss"], stats["g_loss"]]).float()
        if self.bad_step is None:
            self.bad_step = torch.zeros((), dtype=torch.long, device=losses.device)
            self.bad_losses = torch.zeros_like(losses)
        first = ~torch.isfinite(losses).all() & (self.bad_step == 0)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_losses = torch.where(first, losses, self.bad_losses)

    def check(self) -> None:
        """Read the device's flag (a host sync); raise DivergedError at the first bad step."""
        if self.bad_step is None:
            return
        bad_step = int(self.bad_step)
        if bad_step:
            losses = dict(zip(("d_loss", "g_loss"), self.bad_losses.tolist(), strict=True))
            detail = ", ".join(f"{k}={v}" for k, v in losses.items() if not math.isfinite(v))
            raise DivergedError(bad_step, detail)
