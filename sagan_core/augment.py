"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of every image D sees.

The same random transforms are applied to real and generated images, in D's steps and in G's
step, and they are differentiable, so G's gradient passes through them. D then cannot memorise a
small training set pixel by pixel (1,797 digits), which is what lets G collapse onto a few images
D still calls real. Policies, comma separated:

- `translation`: shift each image by up to 1/8 of its size in x and y (integer pixels), the
  uncovered border repeating the edge pixels (the background);
- `cutout`: zero (mid-grey in [-1, 1]) one square of half the image size at a random place.

Randomness comes from torch's global RNG (checkpointed with the run, so a resumed run repeats).
"""

from __future__ import annotations

import torch

from .config import AUGMENT_POLICIES as POLICIES


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """'translation,cutout' -> ('translation', 'cutout'); '' or None -> ()."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}; known: {', '.join(POLICIES)}")
    return names


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W), each image shifted by its own offset in [-r*H, r*H]."""
    B, _, H, W = x.shape
    sh, sw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (B, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (B, 1), device=x.device)
    rows = (torch.arange(H, device=x.device) + dy).clamp(0, H - 1)  # (B, H)
    cols = (torch.arange(W, device=x.device) + dx).clamp(0, W - 1)  # (B, W)
    x = x.gather(2, rows[:, None, :, None].expand(-1, x.shape[1], -1, W))  # rows
    return x.gather(3, cols[:, None, None, :].expand(-1, x.shape[1], H, -1))  # then columns


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """(B, C, H, W) with one (r*H, r*W) square per image set to 0, its centre anywhere."""
    B, _, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    cy = torch.randint(0, H + (1 - ch % 2), (B, 1), device=x.device)
    cx = torch.randint(0, W + (1 - cw % 2), (B, 1), device=x.device)
    ys = torch.arange(H, device=x.device)  # (H,)
    xs = torch.arange(W, device=x.device)  # (W,)
    in_y = (ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch)  # (B, H)
    in_x = (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw)  # (B, W)
    keep = ~(in_y[:, :, None] & in_x[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """Apply the policy's transforms in order; an empty policy returns x itself."""
    for name in policy:
        x = translation(x) if name == "translation" else cutout(x)
    return x
