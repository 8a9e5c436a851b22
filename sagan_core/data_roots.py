"""Where a job's data may live: a `data_root` must lie inside one of the operator's data roots and
outside the service's private paths (its database, storage, token)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from .config import ConfigError, TrainConfig, shown


def check_data_location(
    cfg: TrainConfig,
    roots: Iterable[str | os.PathLike],
    private: Iterable[str | os.PathLike] = (),
) -> TrainConfig:
    """`cfg` with its data_root made absolute, if it lies inside one of `roots`.

    A relative data_root is taken relative to the first root. Symlinks and `..` are resolved
    before the check, so a link inside a root that points outside it is refused, and the path
    returned is the resolved one: what was checked is what is read. Nothing inside a `private`
    path (the service's own storage, broker, runs), nor a folder holding one, is allowed even
    under a root. download=true writes only there too: a root is the download cache. A config
    without data_root (digits, synthetic) passes unchanged. Raises ConfigError("data_root", ...)
    naming the value and the allowed roots.
    """
    if not cfg.data_root:
        return cfg
    allowed = [Path(r).resolve() for r in roots]
    where = ", ".join(str(r) for r in allowed) or "none"
    value = shown(cfg.data_root)
    writes = "; download=true writes only inside these" if cfg.download else ""

    def refuse(problem: str) -> ConfigError:
        message = f"{value} {problem}; allowed: {where} (SAGAN_DATA_ROOTS){writes}"
        return ConfigError("data_root", message)

    if "\x00" in cfg.data_root:
        raise refuse("contains a NUL character")
    if not allowed:
        raise refuse("is not allowed: no data roots are configured")
    path = Path(cfg.data_root)
    if not path.is_absolute():
        path = allowed[0] / path
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a name too long
        raise refuse(f"cannot be resolved ({type(e).__name__})") from e
    via = "" if str(resolved) == cfg.data_root else f"resolves to {shown(str(resolved))}, which "
    if not any(resolved.is_relative_to(root) for root in allowed):
        raise refuse(f"{via}is outside the allowed data roots")
    for p in private:
        p = Path(p).resolve()
        if resolved.is_relative_to(p) or p.is_relative_to(resolved):
            raise refuse(f"{via}holds or is inside the service's own files ({p})")
    return dataclasses.replace(cfg, data_root=str(resolved))
