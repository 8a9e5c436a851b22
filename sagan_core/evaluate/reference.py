"""Reference statistics of real images (mu, sigma, KID features), computed once and cached."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .errors import EvaluationError
from .inception import FeatureExtractor


class StatsCache(Protocol):
    """Where reference statistics live between evaluations (a directory, S3, memory)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None: ...


class DirectoryStatsCache:
    """Statistics as files under a root directory; keys are relative paths."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in Path(key).parts:
            raise ValueError(f"stats cache key must be a relative path without '..': {key!r}")
        return self.root / key

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see half a file


class MemoryStatsCache:
    """Statistics kept in a dict: reuse within one process (the default of make_evaluator)."""

    def __init__(self):
        self.entries: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.entries.get(key)

    def put(self, key: str, data: bytes) -> None:
        self.entries[key] = data


def reference_key_for(dataset: str, resolution: int, split: str = "train") -> str:
    """Identity of a reference set, safe as part of a storage key: ``digits-r32-train``."""
    safe = re.sub(r"[^A-Za-z0-9._=]+", "_", dataset).strip("_") or "dataset"
    if safe != dataset:  # keep 'folder:/a/b' and 'folder:/a_b' apart
        safe += "_" + hashlib.sha1(dataset.encode()).hexdigest()[:8]
    return f"{safe}-r{resolution}-{split}"


def stats_key(
    reference_key: str, extractor_name: str, count: int, class_index: int | None = None
) -> str:
    """``fid-stats/digits-r32-train-inception-v3-compat-n1797.npz`` (``-class3`` for one class)."""
    part = "" if class_index is None else f"-class{class_index}"
    return f"fid-stats/{reference_key}{part}-{extractor_name}-n{count}.npz"


@dataclass
class ReferenceStats:
    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    kid_features: np.ndarray  # (M, D) float32, a seeded subset of at most kid_max rows
    count: int  # images the statistics were computed from

    @classmethod
    def from_features(
        cls, pool: torch.Tensor, kid_max: int = 5000, seed: int = 0
    ) -> ReferenceStats:
        if len(pool) < 2:
            raise EvaluationError(f"reference statistics need at least 2 images; got {len(pool)}")
        f = pool.double()
        mu = f.mean(0)
        xc = f - mu
        sigma = xc.T @ xc / (len(f) - 1)  # as np.cov(rowvar=False)
        keep = pool
        if len(pool) > kid_max:
            idx = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:kid_max]
            keep = pool[idx.to(pool.device)]
        return cls(mu.cpu().numpy(), sigma.cpu().numpy(), keep.float().cpu().numpy(), len(pool))

    def to_bytes(self, fingerprint: str) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            mu=self.mu,
            sigma=self.sigma,
            kid_features=self.kid_features,
            count=np.int64(self.count),
            fingerprint=np.str_(fingerprint),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[ReferenceStats, str]:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            stats = cls(z["mu"], z["sigma"], z["kid_features"], int(z["count"]))
            return stats, str(z["fingerprint"])


def _count_of(images: torch.Tensor | Iterable[torch.Tensor], count: int | None) -> int:
    if torch.is_tensor(images):
        return len(images)
    if count is None:
        raise EvaluationError(
            "reference images given as batches need reference_count for the cache key"
        )
    return count


def _array_batches(images: np.ndarray, batch_size: int) -> Iterable[torch.Tensor]:
    for start in range(0, len(images), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))


def reference_statistics(
    extractor: FeatureExtractor,
    images: torch.Tensor | Iterable[torch.Tensor],
    reference_key: str | None = None,
    *,
    cache: StatsCache | None = None,
    count: int | None = None,
    labels: torch.Tensor | None = None,
    classes: Sequence[int] = (),
    batch_size: int = 64,
    kid_max: int = 5000,
) -> tuple[ReferenceStats, dict[int, ReferenceStats], bool]:
    """Statistics of the whole reference set and of each class in ``classes``.

    Looked up in ``cache`` first; on any miss, features of the reference set are extracted once and
    the missing entries are stored. Returns (stats, per-class stats, whether every entry came from
    the cache). Entries made with other Inception weights count as misses and are replaced.
    """
    if classes and labels is None:
        raise EvaluationError("per-class FID needs the labels of the reference images")
    if isinstance(images, np.ndarray):  # a packed dataset's memmap: read batch by batch
        count = len(images) if count is None else count
        images = _array_batches(images, batch_size)
    if labels is not None:
        labels = torch.as_tensor(labels).cpu()
    use_cache = cache is not None and reference_key is not None
    keys: dict[int | None, str] = {}
    if use_cache:
        keys[None] = stats_key(reference_key, extractor.name, _count_of(images, count))
        for k in classes:
            keys[k] = stats_key(reference_key, extractor.name, int((labels == k).sum()), k)

    found: dict[int | None, ReferenceStats] = {}
    for k, key in keys.items():
        data = cache.get(key)
        if data is not None:
            stats, fingerprint = ReferenceStats.from_bytes(data)
            if fingerprint == extractor.fingerprint:
                found[k] = stats

    wanted = [None, *classes]
    if any(k not in found for k in wanted):
        features = extractor.extract(images, batch_size).pool
        if classes and len(labels) != len(features):
            raise EvaluationError(
                f"{len(labels)} reference labels for {len(features)} reference images"
            )
        for k in wanted:
            if k in found:
                continue
            pool = features if k is None else features[(labels == k).to(features.device)]
            found[k] = ReferenceStats.from_features(pool, kid_max)
            if use_cache:
                cache.put(keys[k], found[k].to_bytes(extractor.fingerprint))
        hit = False
    else:
        hit = use_cache
    return found[None], {k: found[k] for k in classes}, hit


def reference_subset(
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | None,
    max_count: int,
    seed: int = 0,
) -> tuple[torch.Tensor | np.ndarray, torch.Tensor | None]:
    """At most `max_count` real images, a seeded random subset in index order.

    Random rather than the first N: folder data sets are sorted by class, so a prefix would hold
    only the first classes.
    """
    n = len(images)
    if n <= max_count:
        return images, labels
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:max_count].sort().values
    picked = images[idx] if isinstance(images, torch.Tensor) else images[idx.numpy()]
    return picked, (labels[idx] if labels is not None else None)


def config_reference_key(cfg) -> str:  # noqa: ANN001  (a TrainConfig)
    """The reference set's identity for a config: data set (with its root), resolution, split."""
    name = f"{cfg.dataset}:{cfg.data_root}" if cfg.data_root else cfg.dataset
    return reference_key_for(name, cfg.resolution)
