"""Work per training step, counted on meta-device copies of the networks (shapes only, no work)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .checkpoint import build_generator
from .config import TrainConfig
from .losses import d_hinge_loss, g_hinge_loss
from .models import Discriminator


def step_flops(cfg: TrainConfig) -> int:
    """FLOPs of one training step (d_steps D updates and a G update, forwards and backwards) as
    FlopCounterMode counts them, on meta-device copies of the networks: shapes only, no work.
    The fast path reports TFLOP/s with it (a dispatch mode around a compiled step is no count)."""
    with torch.device("meta"):
        G = build_generator(cfg)
        D = Discriminator(cfg.num_classes, cfg.resolution, cfg.d_ch)
        B, R = cfg.batch_size, cfg.resolution
        y = torch.zeros(B, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            for _ in range(cfg.d_steps):
                with torch.no_grad():
                    x_fake = G(torch.zeros(B, cfg.z_dim), y)
                logits = D(torch.cat([torch.zeros(B, 3, R, R), x_fake]), torch.cat([y, y]))
                d_hinge_loss(*logits.chunk(2)).backward()
            D.requires_grad_(False)
            g_hinge_loss(D(G(torch.zeros(B, cfg.z_dim), y), y)).backward()
    return counter.get_total_flops()
