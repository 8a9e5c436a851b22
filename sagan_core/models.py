"""SAGAN generator and discriminator: residual BigGAN-style blocks, one attention layer each."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .arch import D_ARCH, G_ARCH, G_ATTN_SIZE, Z_MODES
from .layers import (
    ConditionalBatchNorm2d,
    LinearConditionalBatchNorm2d,
    SelfAttention,
    sn_conv,
    sn_embedding,
    sn_linear,
)


class GBlock(nn.Module):
    """Residual up-block. Its batch norms are conditioned on the class index (the paper's G), or,
    given `cond_dim`, on a condition vector (shared class embedding + a chunk of z, BigGAN)."""

    def __init__(self, in_ch: int, out_ch: int, num_classes: int, cond_dim: int | None = None):
        super().__init__()
        if cond_dim is None:
            self.bn1 = ConditionalBatchNorm2d(in_ch, num_classes)
            self.bn2 = ConditionalBatchNorm2d(out_ch, num_classes)
        else:
            self.bn1 = LinearConditionalBatchNorm2d(in_ch, cond_dim)
            self.bn2 = LinearConditionalBatchNorm2d(out_ch, cond_dim)
        self.conv1 = sn_conv(in_ch, out_ch)
        self.conv2 = sn_conv(out_ch, out_ch)
        self.shortcut = sn_conv(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x, y))  # (B, Cin, H, W)
        h = F.interpolate(h, scale_factor=2, mode="nearest")  # (B, Cin, 2H, 2W)
        h = self.conv1(h)  # (B, Cout, 2H, 2W)
        h = self.conv2(F.relu(self.bn2(h, y)))  # (B, Cout, 2H, 2W)
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """Pre-activation residual down-block; `optimized` is the first block, which sees raw pixels."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, optimized: bool = False):
        super().__init__()
        self.downsample, self.optimized = downsample, optimized
        self.conv1 = sn_conv(in_ch, out_ch)
        self.conv2 = sn_conv(out_ch, out_ch)
        self.learnable_sc = in_ch != out_ch or downsample
        self.shortcut = sn_conv(in_ch, out_ch, 1) if self.learnable_sc else None

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.learnable_sc:
            return x
        if self.optimized:  # pool first: cheaper, and the input is pixels
            return self.shortcut(F.avg_pool2d(x, 2) if self.downsample else x)
        x = self.shortcut(x)
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.optimized else F.relu(x)  # (B, Cin, H, W)
        h = self.conv2(F.relu(self.conv1(h)))  # (B, Cout, H, W)
        if self.downsample:
            h = F.avg_pool2d(h, 2)  # (B, Cout, H/2, W/2)
        return h + self._shortcut(x)


class _Attending(nn.Module):
    def attention_gammas(self) -> dict[str, float]:
        """Module path -> current gamma of each self-attention layer."""
        return {
            name: float(m.gamma.detach())
            for name, m in self.named_modules()
            if isinstance(m, SelfAttention)
        }


def z_chunks(z_dim: int, num_blocks: int) -> list[int]:
    """Hierarchical z: sizes of the input chunk and of each block's chunk (the input takes the
    remainder when z_dim does not divide evenly)."""
    per_block = z_dim // (num_blocks + 1)
    if per_block < 1:
        raise ValueError(f"hierarchical z needs z_dim >= {num_blocks + 1} (got {z_dim})")
    return [z_dim - num_blocks * per_block] + [per_block] * num_blocks


class Generator(_Attending):
    """z_mode "input" is the paper's G: z enters only through the first linear, and each
    conditional batch norm has its own per-class gain and bias embeddings. "hierarchical" is
    BigGAN's: z is split into chunks, the first feeds the linear and each block's batch norms get
    their chunk joined with a shared class embedding (`shared_dim`), so z acts at every scale."""

    def __init__(
        self,
        z_dim: int,
        num_classes: int,
        resolution: int,
        ch: int = 64,
        z_mode: str = "input",
        shared_dim: int = 128,
    ):
        super().__init__()
        if z_mode not in Z_MODES:
            raise ValueError(f"z_mode must be one of {', '.join(Z_MODES)} (got {z_mode!r})")
        self.z_dim, self.num_classes, self.resolution, self.ch = z_dim, num_classes, resolution, ch
        self.z_mode = z_mode
        arch = G_ARCH[resolution]
        self.in_ch = arch["in"][0] * ch
        cond_dim = None
        if z_mode == "hierarchical":
            self.z_split = z_chunks(z_dim, len(arch["in"]))
            self.shared = nn.Embedding(num_classes, shared_dim)  # like the CBN embeddings: no SN
            cond_dim = shared_dim + self.z_split[1]
        self.linear = sn_linear(z_dim if cond_dim is None else self.z_split[0], 4 * 4 * self.in_ch)
        self.blocks = nn.ModuleList()
        size = 4
        for cin, cout in zip(arch["in"], arch["out"], strict=True):
            self.blocks.append(GBlock(cin * ch, cout * ch, num_classes, cond_dim))
            size *= 2
            if size == G_ATTN_SIZE[resolution]:
                self.blocks.append(SelfAttention(cout * ch))
        out_ch = arch["out"][-1] * ch
        self.bn = nn.BatchNorm2d(out_ch)
        self.conv_out = sn_conv(out_ch, 3)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.z_mode == "hierarchical":
            z, *chunks = z.split(self.z_split, dim=1)  # (B, Z0), [(B, Zb)] * blocks
            shared = self.shared(y)  # (B, S)
            conds = iter([torch.cat([shared, c], dim=1) for c in chunks])  # (B, S + Zb) each
        h = self.linear(z).view(z.shape[0], self.in_ch, 4, 4)  # (B, C0, 4, 4)
        for block in self.blocks:
            if isinstance(block, SelfAttention):
                h = block(h)
            else:
                h = block(h, y if self.z_mode == "input" else next(conds))  # (B, Ci, Hi, Wi)
        h = F.relu(self.bn(h))  # (B, Clast, R, R)
        return torch.tanh(self.conv_out(h))  # (B, 3, R, R)


class Discriminator(_Attending):
    def __init__(self, num_classes: int, resolution: int, ch: int = 64):
        super().__init__()
        self.num_classes, self.resolution, self.ch = num_classes, resolution, ch
        arch = D_ARCH[resolution]
        self.blocks = nn.ModuleList()
        cin = 3
        for i, (mult, down) in enumerate(zip(arch["out"], arch["down"], strict=True)):
            self.blocks.append(DBlock(cin, mult * ch, down, optimized=i == 0))
            if i == 0:
                self.blocks.append(SelfAttention(mult * ch))
            cin = mult * ch
        self.linear = sn_linear(cin, 1)
        self.embed = sn_embedding(num_classes, cin)
        # Weight of the class projection term: 1 is the paper's D; the trainer lowers it during
        # `class_warmup`. A buffer, not a Python number, so that a compiled D reads it as an input
        # (a number would be a constant of the graph: a recompile at every warm-up step); not
        # persistent: checkpoints do not carry it.
        self.register_buffer("class_weight", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = x  # (B, 3, R, R)
        for block in self.blocks:
            h = block(h)  # (B, Ci, Hi, Wi)
        h = F.relu(h).sum(dim=(2, 3))  # (B, C)
        projection = (self.embed(y) * h).sum(dim=1) * self.class_weight  # (B,); x * 1 is x
        return self.linear(h).squeeze(1) + projection  # (B,)


def attention_gamma_metrics(G: nn.Module, D: nn.Module) -> dict[str, float]:
    """`gamma_g`, `gamma_d` (or `gamma_g/<layer>` where a network attends at several layers)."""
    out = {}
    for prefix, model in (("gamma_g", G), ("gamma_d", D)):
        gammas = model.attention_gammas()
        for name, value in gammas.items():
            out[prefix if len(gammas) == 1 else f"{prefix}/{name}"] = value
    return out
