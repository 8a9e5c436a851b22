"""The exponential moving average of G's weights, which sampling and evaluation use."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model on parameters; buffers (BN stats, SN u/v) copied."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


@torch.no_grad()
def ema_update_foreach(
    ema: Sequence[torch.Tensor],
    model: Sequence[torch.Tensor],
    ema_buffers: Sequence[torch.Tensor],
    buffers: Sequence[torch.Tensor],
    decay: float,
) -> None:
    """ema_update by torch._foreach ops over lists made once: a few kernels, not one per tensor."""
    torch._foreach_lerp_(list(ema), list(model), 1.0 - decay)
    torch._foreach_copy_(list(ema_buffers), list(buffers))
