"""Building blocks of SAGAN: spectral-normalised layers, conditional batch norm, self-attention."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm


def _sn(module: nn.Module) -> nn.Module:
    # Orthogonal init before wrapping: spectral_norm runs its first power iterations on it.
    nn.init.orthogonal_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return spectral_norm(module, eps=1e-6)


def sn_conv(in_ch: int, out_ch: int, kernel_size: int = 3, bias: bool = True) -> nn.Module:
    return _sn(nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias))


def sn_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Module:
    return _sn(nn.Linear(in_features, out_features, bias=bias))


def sn_embedding(num_embeddings: int, dim: int) -> nn.Module:
    return _sn(nn.Embedding(num_embeddings, dim))


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm without its own affine; a per-class gain and bias come from two embeddings."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False, eps=1e-5, momentum=0.1)
        self.gain = nn.Embedding(num_classes, num_features)
        self.bias = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gain = self.gain(y)[:, :, None, None]  # (B, C, 1, 1)
        bias = self.bias(y)[:, :, None, None]  # (B, C, 1, 1)
        return self.bn(x) * gain + bias  # (B, C, H, W)


class LinearConditionalBatchNorm2d(nn.Module):
    """BigGAN's conditional batch norm: gain 1 + W_g c and bias W_b c from a condition vector c.

    c is the shared class embedding joined with this block's chunk of z (`z_mode` "hierarchical"),
    so z reaches every block's normalisation, not only G's first linear. W_g and W_b are
    spectrally normalised linears without bias; the gain starts near 1.
    """

    def __init__(self, num_features: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False, eps=1e-5, momentum=0.1)
        self.gain = sn_linear(cond_dim, num_features, bias=False)
        self.bias = sn_linear(cond_dim, num_features, bias=False)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gain = 1.0 + self.gain(c)[:, :, None, None]  # (B, C, 1, 1)
        bias = self.bias(c)[:, :, None, None]  # (B, C, 1, 1)
        return self.bn(x) * gain + bias  # (B, C, H, W)


class SelfAttention(nn.Module):
    """SAGAN self-attention: queries at every position attend to 2x2-max-pooled keys and values.

    forward() uses scaled_dot_product_attention (the N x N/4 map is never materialised);
    forward_with_map() is the same computation written out, returning the map for inspection.
    The paper does not scale logits by 1/sqrt(d), hence scale=1.0.
    """

    def __init__(self, channels: int):
        super().__init__()
        assert channels % 8 == 0, f"attention needs channels divisible by 8, got {channels}"
        self.channels = channels
        self.f = sn_conv(channels, channels // 8, 1, bias=False)  # query
        self.g = sn_conv(channels, channels // 8, 1, bias=False)  # key
        self.h = sn_conv(channels, channels // 2, 1, bias=False)  # value
        self.o = sn_conv(channels // 2, channels, 1, bias=False)  # back to C
        self.gamma = nn.Parameter(torch.zeros(()))

    def _qkv(self, x: torch.Tensor):
        q = self.f(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
        k = F.max_pool2d(self.g(x), 2).flatten(2).transpose(1, 2)  # (B, N/4, C/8)
        v = F.max_pool2d(self.h(x), 2).flatten(2).transpose(1, 2)  # (B, N/4, C/2)
        return q, k, v

    def _out(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        o = o.transpose(1, 2).reshape(B, C // 2, H, W)  # (B, C/2, H, W)
        return x + self.gamma * self.o(o)  # (B, C, H, W)

    # The fast path sets this: queries and keys zero-padded to the values' width (C/8 -> C/2), so
    # the fused attention kernels that need equal widths (flash, on CPU and CUDA) run; the extra
    # zero components add 0 to every logit q.k, and scale=1.0 is explicit, so nothing changes
    # (tests/core/test_fast_path.py holds it to forward_with_map).
    pad_qk = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        if self.pad_qk and q.shape[-1] < v.shape[-1]:
            width = v.shape[-1] - q.shape[-1]
            q, k = F.pad(q, (0, width)), F.pad(k, (0, width))  # (B, N, C/2), (B, N/4, C/2)
            v = v.contiguous()  # the flash kernels want unit stride along the width
        o = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)
        return self._out(x, o[:, 0])  # o: (B, 1, N, C/2) -> (B, N, C/2)

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self._qkv(x)
        attn = torch.softmax(q @ k.transpose(1, 2), dim=-1)  # (B, N, N/4)
        o = attn @ v  # (B, N, C/2)
        return self._out(x, o), attn


SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


def sdpa_backends(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    """The scaled_dot_product_attention backends that accept these inputs (each tried alone, in
    torch's order of preference; MATH is the unfused fallback)."""
    import warnings

    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = []
    for name in SDPA_BACKENDS:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                with sdpa_kernel([getattr(SDPBackend, name)]):
                    F.scaled_dot_product_attention(q, k, v, scale=1.0)
            out.append(name.removesuffix("_ATTENTION").lower())
        except (RuntimeError, AttributeError):
            pass
    return out
