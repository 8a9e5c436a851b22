"""Which torch device a name means: "auto" is CUDA where there is one, else the CPU."""

from __future__ import annotations

import torch

from .config import ConfigError


def resolve_device(name: str | torch.device) -> torch.device:
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device_available(
    device: torch.device, asked: str | None = None, where: str = "this machine", hint: str = ""
) -> torch.device:
    """`device` if this process can run on it, else ConfigError("device", ...) in one line.

    `asked` is the name the config gave (default: the device's own), `where` names the machine
    in the message and `hint` is appended to it (the service names its SAGAN_WORKER_DEVICE).
    """
    name = asked if asked is not None else str(device)
    hint = f" {hint}" if hint else ""

    def refuse(problem: str) -> ConfigError:
        return ConfigError("device", f"{name!r} asked for, but {where} {problem}{hint}")

    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise refuse("has no CUDA device")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            last = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise refuse(f"has {count} CUDA device{'s' if count > 1 else ''} ({last})")
        return device
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise refuse("has no MPS device")
        return device
    raise refuse("runs only on cpu, cuda, cuda:N or mps")
