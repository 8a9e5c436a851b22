"""Checkpoints: one torch.save dict of tensors, numbers, strings, lists, dicts (weights_only)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from .config import TrainConfig
from .models import Generator

FORMAT_VERSION = 1


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where a run directory keeps the checkpoint of a step."""
    return Path(run_dir) / "checkpoints" / f"step-{step:07d}.pt"


def newest_checkpoint_file(run_dir: str | Path) -> Path | None:
    """The run directory's checkpoint of the highest step, or None."""
    found = sorted((Path(run_dir) / "checkpoints").glob("step-*.pt"))
    return found[-1] if found else None


def save_checkpoint(path: str | Path, **contents: Any) -> Path:
    """Write `contents` (plus the format version) atomically: a temp file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format_version": FORMAT_VERSION, **contents}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path | IO[bytes], map_location: Any = "cpu") -> dict[str, Any]:
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    version = ckpt.get("format_version") if isinstance(ckpt, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path}: format version {version!r}, expected {FORMAT_VERSION}"
        )
    return ckpt


# Architecture fields added after checkpoints were first written: what a checkpoint without them
# was trained with.
LEGACY_ARCH = {"z_mode": "input"}


def build_generator(cfg: TrainConfig) -> Generator:
    """G for a resolved config (num_classes and g_ch filled in; z_mode None: a legacy config)."""
    z_mode = cfg.z_mode if cfg.z_mode is not None else LEGACY_ARCH["z_mode"]
    return Generator(cfg.z_dim, cfg.num_classes, cfg.resolution, cfg.g_ch, z_mode=z_mode)


def load_generator(
    path_or_fileobj: str | Path | IO[bytes], device: str | torch.device = "cpu"
) -> tuple[Generator, TrainConfig, list[str]]:
    """The EMA generator of a checkpoint in eval mode, with its config and class names."""
    ckpt = load_checkpoint(path_or_fileobj, map_location=device)
    cfg = TrainConfig.from_dict(ckpt["config"])
    G = build_generator(cfg)
    G.load_state_dict(ckpt["G_ema"])
    return G.to(device).eval(), cfg, list(ckpt["class_names"])


# RNG states as weights_only-safe values (numpy's state holds an ndarray: stored as a tensor).


def capture_rng(data_generator: torch.Generator | None = None) -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "data": data_generator.get_state() if data_generator is not None else None,
    }


def restore_rng(state: dict[str, Any], data_generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if data_generator is not None and state["data"] is not None:
        data_generator.set_state(state["data"].cpu())
