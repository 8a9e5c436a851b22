"""Every term of the objective. The hinge loss as in SAGAN: D pushes real logits above +1, fake
below -1; G raises fake logits. MSGAN's mode-seeking term (the small-data recipe): G is rewarded
for images that differ as much as their latents do."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def mode_seeking_ratio(x: torch.Tensor, z: torch.Tensor, half: int) -> torch.Tensor:
    """MSGAN's ratio: mean |x_i - x_j| over mean |z_i - z_j| for the pairs (i, i + half)."""
    dx = (x[:half] - x[half : 2 * half]).abs().mean()
    dz = (z[:half] - z[half : 2 * half]).abs().mean()
    return dx / dz


def mode_seeking_term(
    x: torch.Tensor, z: torch.Tensor, half: int, weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """G's extra loss `weight / ratio` for the pairs (i, i + half) of one class, and the ratio."""
    spread = mode_seeking_ratio(x, z, half)
    return weight / (spread + 1e-5), spread
