"""Render sample grids from trained generators, loading each checkpoint once (a thread-safe LRU)."""

from __future__ import annotations

import hashlib
import math
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagan_core.config import MAX_SEED
from store.settings import Settings
from store.storage import Storage

RENDERED_CACHE_SIZE = 64  # PNGs of recent queries; a repeated query costs no forward pass


class SampleRequestError(ValueError):
    """A sample query the model cannot answer; str(e) names the parameter and the problem."""


def _trunc(truncation: float | None) -> str:
    return "none" if truncation is None else repr(float(truncation))


def check_sample_query(n: int, seed: int, truncation: float | None, max_n: int) -> None:
    if not 1 <= n <= max_n:
        raise SampleRequestError(f"n: must be between 1 and {max_n} (got {n})")
    if not 0 <= seed <= MAX_SEED:
        raise SampleRequestError(f"seed: must be between 0 and {MAX_SEED} (got {seed})")
    if truncation is not None and not (math.isfinite(truncation) and truncation > 0):
        raise SampleRequestError(f"truncation: must be a finite number > 0 (got {truncation})")


def sample_etag(
    checkpoint_key: str, class_index: int, n: int, seed: int, truncation: float | None
) -> str:
    """The address of a grid: the same checkpoint and query always render the same bytes."""
    text = f"{checkpoint_key}\n{class_index}\n{n}\n{seed}\n{_trunc(truncation)}"
    return '"' + hashlib.sha256(text.encode()).hexdigest() + '"'


def attention_etag(
    checkpoint_key: str, class_index: int, seed: int, truncation: float | None, x: int, y: int
) -> str:
    text = f"attention\n{checkpoint_key}\n{class_index}\n{seed}\n{_trunc(truncation)}\n{x}\n{y}"
    return '"' + hashlib.sha256(text.encode()).hexdigest() + '"'


def check_query_pixel(x: int, y: int, resolution: int) -> None:
    for name, v in (("x", x), ("y", y)):
        if not 0 <= v < resolution:
            raise SampleRequestError(
                f"{name}: must be between 0 and {resolution - 1} "
                f"for a {resolution}px model (got {v})"
            )


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return any(t == "*" or t.removeprefix("W/") == etag for t in tags)


@dataclass
class _Loaded:
    generator: Any
    class_names: list[str]
    lock: threading.Lock = field(default_factory=threading.Lock)


class SampleRenderer:
    """Loads EMA generators from storage on first use and keeps `sample_cache_size` of them."""

    def __init__(self, settings: Settings):
        self.capacity = max(1, settings.sample_cache_size)
        self.device = "cpu" if settings.worker_device in ("auto", "") else settings.worker_device
        self._generators: OrderedDict[str, _Loaded] = OrderedDict()
        self._pngs: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0  # how many checkpoints were read from storage (tests watch the cache)

    def _generator(self, key: str, storage: Storage) -> _Loaded:
        with self._lock:
            if key in self._generators:
                self._generators.move_to_end(key)
                return self._generators[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:  # one download per key, however many requests arrive at once
            with self._lock:
                if key in self._generators:
                    return self._generators[key]
            loaded = self._load(key, storage)
            with self._lock:
                self._generators[key] = loaded
                while len(self._generators) > self.capacity:
                    self._generators.popitem(last=False)
                self._loading.pop(key, None)
                self.loads += 1
            return loaded

    def _load(self, key: str, storage: Storage) -> _Loaded:
        from sagan_core.checkpoint import load_generator

        with tempfile.TemporaryDirectory(prefix="sagan-ckpt-") as tmp:
            path = Path(tmp) / "checkpoint.pt"
            storage.download(key, path)
            generator, _cfg, class_names = load_generator(path, self.device)
        return _Loaded(generator, list(class_names))

    def _cached(self, etag: str, make) -> bytes:  # noqa: ANN001
        with self._lock:
            if etag in self._pngs:
                self._pngs.move_to_end(etag)
                return self._pngs[etag]
        png = make()
        with self._lock:
            self._pngs[etag] = png
            while len(self._pngs) > RENDERED_CACHE_SIZE:
                self._pngs.popitem(last=False)
        return png

    def render_attention(
        self,
        checkpoint_key: str,
        storage: Storage,
        class_index: int,
        seed: int,
        truncation: float | None,
        x: int,
        y: int,
    ) -> bytes:
        """One sample (the first of `samples` for the same seed) and where pixel (x, y) attends."""

        def make() -> bytes:
            from sagan_core.sample import attention_map, attention_png

            loaded = self._generator(checkpoint_key, storage)
            with loaded.lock:
                images, maps = attention_map(
                    loaded.generator, class_index, 1, seed, (x, y), truncation
                )
            return attention_png(images[0], maps[0], (x, y))

        etag = attention_etag(checkpoint_key, class_index, seed, truncation, x, y)
        return self._cached(etag, make)

    def render(
        self,
        checkpoint_key: str,
        storage: Storage,
        class_index: int,
        n: int,
        seed: int,
        truncation: float | None,
    ) -> bytes:
        def make() -> bytes:
            from sagan_core.sample import grid_png, sample

            loaded = self._generator(checkpoint_key, storage)
            with loaded.lock:  # one forward pass at a time per generator: it is not ours to share
                images = sample(loaded.generator, class_index, n, seed, truncation)
            return grid_png(images)

        return self._cached(sample_etag(checkpoint_key, class_index, n, seed, truncation), make)
