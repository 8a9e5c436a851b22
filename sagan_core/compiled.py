"""The fast path's compiled steps, and the way back to eager ones when compiling cannot work on a
machine (no C compiler for inductor or Triton, a GPU Triton does not support)."""

from __future__ import annotations

import torch

from .layers import SelfAttention


def compiled_steps(
    G_step: torch.nn.Module,
    D: torch.nn.Module,
    D_update: torch.nn.Module,
    several: bool,
    cuda_graphs: bool,
) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """(G_step, D_step, D_update) compiled; they share the modules' parameters and buffers, so
    state dicts and checkpoints are unchanged. `several`: D_update is DDP's wrapper of D."""
    for net in (G_step, D):
        for m in net.modules():
            if isinstance(m, SelfAttention):
                m.pad_qk = True  # q/k as wide as v: the flash SDPA kernel takes it
    # CUDA graphs: reduce-overhead records each compiled graph once and replays it. Their
    # outputs live in a pool the next replay overwrites; every tensor kept past a step (the
    # window's loss sums, the non-finite flag) is computed from them eagerly.
    mode = "reduce-overhead" if cuda_graphs else None
    G_compiled = torch.compile(G_step, dynamic=False, mode=mode)
    D_compiled = torch.compile(D, dynamic=False, mode=mode)
    D_update = D_compiled if not several else torch.compile(D_update, dynamic=False)
    return G_compiled, D_compiled, D_update


def uncompiled_steps(
    G_step: torch.nn.Module, D_step: torch.nn.Module, D_update: torch.nn.Module
) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """The modules compiled_steps wrapped, to be called eagerly from now on."""
    torch._dynamo.reset()
    return tuple(getattr(m, "_orig_mod", m) for m in (G_step, D_step, D_update))  # type: ignore[return-value]


def compile_failure(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}".rstrip(": ")


def fallback_note(failure: str) -> str:
    return (
        f"torch.compile failed on this machine ({failure}); training goes on uncompiled (the "
        "same steps, slower). Install a C compiler (gcc) for the compiled path."
    )
