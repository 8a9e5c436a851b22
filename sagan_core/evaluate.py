"""Evaluation of a generator: IS, FID, KID and per-class FID through torch-fidelity's Inception.

Features come from torch-fidelity's ``inception-v3-compat`` extractor (pool3 for FID/KID, unbiased
logits for IS), so numbers are comparable with the reference tool. Reference statistics of a data
set are computed once and kept in a ``StatsCache`` (a directory here, S3 in the service). The
generator is wrapped here rather than through torch-fidelity's conditional sampler, which calls
``np.int`` (removed in NumPy 1.24).

    ex = FeatureExtractor(weights_path=None, device="cuda")  # None: env, hub cache, download
    result = evaluate_generator(G_ema, dataset.images, reference_key_for("digits", 32, "train"),
                                n_samples=10_000, extractor=ex, cache=DirectoryStatsCache(root))
    result["fid"], result.reference_cache_hit
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

INCEPTION_NAME = "inception-v3-compat"
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
)
INCEPTION_WEIGHTS_SHA256_PREFIX = "6726825d"
WEIGHTS_ENV = "SAGAN_INCEPTION_WEIGHTS"
POOL_FEATURE, LOGITS_FEATURE = (
    "2048",
    "logits_unbiased",
)  # torch-fidelity's defaults for FID/KID, IS


class EvaluationError(RuntimeError):
    """Evaluation cannot run (missing weights, bad inputs); the message says what to provide."""


# --------------------------------------------------------------------------- Inception weights


def _missing_weights_message(reason: str) -> str:
    return (
        f"Inception weights are not available: {reason}. Set `inception_weights` (or the "
        f"environment variable {WEIGHTS_ENV}) to a local copy of torch-fidelity's "
        f"{INCEPTION_WEIGHTS_FILE} "
        f"(from {INCEPTION_WEIGHTS_URL}), or run where that URL is reachable. "
        "Training without evaluation does not need it."
    )


def _hub_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def _download(url: str, dest: Path, timeout: float) -> None:
    """Fetch url to dest atomically, checking the sha256 prefix that the file name carries."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        # timeout bounds each socket operation, so an unreachable host fails in seconds, not minutes
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if not digest.hexdigest().startswith(INCEPTION_WEIGHTS_SHA256_PREFIX):
            raise OSError(
                f"downloaded file has sha256 {digest.hexdigest()[:8]}..., expected "
                f"{INCEPTION_WEIGHTS_SHA256_PREFIX}..."
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolve_inception_weights(
    weights_path: str | os.PathLike | None = None, *, download: bool = True, timeout: float = 20.0
) -> Path:
    """The local file of the Inception weights.

    Order: ``weights_path``, then ``$SAGAN_INCEPTION_WEIGHTS``, then torch hub's cache
    (``<hub>/checkpoints/<file>``), then a download into that cache. Raises EvaluationError at once
    when none works.
    """
    configured = weights_path or os.environ.get(WEIGHTS_ENV) or None
    if configured is not None:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise EvaluationError(
                _missing_weights_message(f"configured file {str(path)!r} does not exist")
            )
        return path
    cached = _hub_weights_path()
    if cached.is_file():
        return cached
    if not download:
        raise EvaluationError(
            _missing_weights_message("no path configured and download is disabled")
        )
    try:
        _download(INCEPTION_WEIGHTS_URL, cached, timeout)
    except (OSError, ValueError) as e:  # URLError, timeouts, refused connections are OSErrors
        raise EvaluationError(_missing_weights_message(f"download failed ({e})")) from e
    return cached


def _file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- feature extraction


@dataclass
class Features:
    pool: torch.Tensor  # (N, 2048) float32, FID and KID
    logits: torch.Tensor  # (N, 1008) float32, IS

    def __len__(self) -> int:
        return len(self.pool)


def _check_images(batch: torch.Tensor) -> torch.Tensor:
    if not (torch.is_tensor(batch) and batch.dtype == torch.uint8 and batch.dim() == 4):
        got = (
            f"{batch.dtype} {tuple(batch.shape)}"
            if torch.is_tensor(batch)
            else type(batch).__name__
        )
        raise EvaluationError(f"images must be a uint8 tensor (N, 3, H, W); got {got}")
    if batch.shape[1] != 3:
        raise EvaluationError(
            f"images must have 3 channels first (N, 3, H, W); got {tuple(batch.shape)}"
        )
    return batch


def iter_batches(
    images: torch.Tensor | Iterable[torch.Tensor], batch_size: int
) -> Iterator[torch.Tensor]:
    """Batches of uint8 (B, 3, H, W) from a tensor or an iterable of batches."""
    if torch.is_tensor(images):
        _check_images(images)
        yield from images.split(batch_size)
    else:
        for batch in images:
            yield _check_images(batch)


class FeatureExtractor:
    """torch-fidelity's InceptionV3 (``inception-v3-compat``) on one device.

    Takes uint8 images (N, 3, H, W) of any size (resized to 299 inside, as TF1 did) and returns
    pool3 features and unbiased logits.
    """

    name = INCEPTION_NAME

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        *,
        download: bool = True,
    ):
        path = resolve_inception_weights(weights_path, download=download)
        try:
            model = FeatureExtractorInceptionV3(
                INCEPTION_NAME,
                [POOL_FEATURE, LOGITS_FEATURE],
                feature_extractor_weights_path=str(path),
            )
        except Exception as e:  # unpickling or state-dict mismatch: the file is not the weights
            first_line = (str(e).strip().splitlines() or [""])[0][:200]
            raise EvaluationError(
                f"Inception weights {str(path)!r} could not be loaded ({type(e).__name__}: "
                f"{first_line}); expected torch-fidelity's {INCEPTION_WEIGHTS_FILE}"
            ) from e
        self.weights_path = path
        self.fingerprint = _file_fingerprint(path)  # stored with cached statistics
        self.device = torch.device(device)
        self.model = model.to(self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Features:
        pool, logits = self.model(_check_images(images).to(self.device, non_blocking=True))
        return Features(pool, logits)  # (B, 2048), (B, 1008)

    def extract(
        self, images: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 64
    ) -> Features:
        parts = [self(batch) for batch in iter_batches(images, batch_size)]
        if not parts:
            raise EvaluationError("no images to evaluate")
        return Features(torch.cat([p.pool for p in parts]), torch.cat([p.logits for p in parts]))


# --------------------------------------------------------------------------- reference statistics


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


# --------------------------------------------------------------------------- metrics


def frechet_distance(features: torch.Tensor, mu: np.ndarray, sigma: np.ndarray) -> float:
    """FID between features (N, D) and reference (mu, sigma).

    tr sqrt(S_f S_r) is taken from a symmetric PSD matrix with the same nonzero eigenvalues as
    S_f S_r: (N x N) Xc S_r Xc^T / (N-1) when N <= D, else S_f^1/2 S_r S_f^1/2. Same value as
    torch-fidelity's eigvals route, in float64 on the features' device.
    """
    f = features.double()
    n = len(f)
    if n < 2:
        raise EvaluationError(f"FID needs at least 2 generated images; got {n}")
    mu_r = torch.as_tensor(mu, dtype=torch.float64, device=f.device)
    sigma_r = torch.as_tensor(sigma, dtype=torch.float64, device=f.device)
    mu_f = f.mean(0)
    xc = f - mu_f  # (N, D)
    if n - 1 <= f.shape[1]:
        m = xc @ sigma_r @ xc.T / (n - 1)  # (N, N)
    else:
        w, v = torch.linalg.eigh(xc.T @ xc / (n - 1))
        root = (v * w.clamp(min=0).sqrt()) @ v.T  # S_f^1/2
        m = root @ sigma_r @ root  # (D, D)
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu_f - mu_r
    tr_f = (xc * xc).sum() / (n - 1)
    return float(diff @ diff + tr_f + sigma_r.trace() - 2 * tr_covmean)


@dataclass
class MetricInputs:
    fake: Features
    reference: ReferenceStats | None
    seed: int = 0


MetricFn = Callable[[MetricInputs], dict[str, float]]
_METRICS: dict[str, tuple[MetricFn, bool]] = {}


def register_metric(name: str, *, needs_reference: bool = True) -> Callable[[MetricFn], MetricFn]:
    def wrap(fn: MetricFn) -> MetricFn:
        _METRICS[name] = (fn, needs_reference)
        return fn

    return wrap


def available_metrics() -> list[str]:
    return sorted(_METRICS)


def _check_metric_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in _METRICS]
    if unknown:
        raise EvaluationError(f"unknown metrics {unknown}; available: {available_metrics()}")


def calc_metrics(
    names: Sequence[str], fake: Features, reference: ReferenceStats | None = None, seed: int = 0
) -> dict[str, float]:
    _check_metric_names(names)
    inputs = MetricInputs(fake, reference, seed)
    out: dict[str, float] = {}
    for name in names:
        fn, needs_reference = _METRICS[name]
        if needs_reference and reference is None:
            raise EvaluationError(f"metric {name!r} needs reference images")
        out.update(fn(inputs))
    return out


@register_metric("is", needs_reference=False)
def inception_score(inputs: MetricInputs) -> dict[str, float]:
    logits = inputs.fake.logits.cpu()
    splits = max(1, min(10, len(logits) // 2))
    r = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=inputs.seed)
    return {"is": r["inception_score_mean"], "is_std": r["inception_score_std"]}


@register_metric("fid")
def fid(inputs: MetricInputs) -> dict[str, float]:
    return {"fid": frechet_distance(inputs.fake.pool, inputs.reference.mu, inputs.reference.sigma)}


@register_metric("kid")
def kid(inputs: MetricInputs) -> dict[str, float]:
    ref = torch.from_numpy(inputs.reference.kid_features)
    fake = inputs.fake.pool.float().cpu()
    subset = min(1000, len(fake), len(ref))
    if subset < 2:
        raise EvaluationError("KID needs at least 2 generated and 2 reference images")
    r = kid_features_to_metric(
        fake, ref, kid_subsets=100, kid_subset_size=subset, rng_seed=inputs.seed, verbose=False
    )
    return {
        "kid": r["kernel_inception_distance_mean"],
        "kid_std": r["kernel_inception_distance_std"],
    }


# --------------------------------------------------------------------------- the generator side


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] to uint8 [0, 255]."""
    return ((images + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def draw_classes(n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """n class indices drawn uniformly and independently: (n,) int64."""
    return torch.randint(num_classes, (n,), generator=generator)


def _module_device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def generate_images(
    G: nn.Module,
    n: int,
    *,
    batch_size: int = 64,
    seed: int = 0,
    class_index: int | None = None,
    device: str | torch.device | None = None,
) -> Iterator[torch.Tensor]:
    """uint8 image batches (B, 3, R, R) from G(z, y): z ~ N(0, I), y uniform over G.num_classes
    (or all ``class_index``; y=None for an unconditional G). Deterministic for a seed: the noise
    and classes come from a CPU generator, so the same seed gives the same draws on any device.
    """
    device = torch.device(device) if device is not None else _module_device(G)
    num_classes = getattr(G, "num_classes", 0) or 0
    rng = torch.Generator().manual_seed(seed)
    if class_index is not None:
        labels = torch.full((n,), class_index, dtype=torch.long)
    elif num_classes > 0:
        labels = draw_classes(n, num_classes, rng)
    else:
        labels = None
    was_training = G.training
    G.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                b = min(batch_size, n - start)
                z = torch.randn(b, G.z_dim, generator=rng).to(device)
                y = None if labels is None else labels[start : start + b].to(device)
                yield to_uint8(G(z, y))
    finally:
        G.train(was_training)


# --------------------------------------------------------------------------- entry points


class EvaluationResult(dict):
    """Metric name -> value, plus whether the reference statistics came from the cache."""

    def __init__(self, metrics: dict[str, float], reference_cache_hit: bool = False):
        super().__init__(metrics)
        self.reference_cache_hit = reference_cache_hit


def evaluate_images(
    fake_images: torch.Tensor | Iterable[torch.Tensor],
    reference_images: torch.Tensor | Iterable[torch.Tensor] | None = None,
    *,
    extractor: FeatureExtractor,
    metrics: Sequence[str] = ("is", "fid", "kid"),
    reference_key: str | None = None,
    cache: StatsCache | None = None,
    reference_count: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> EvaluationResult:
    """Metrics of a set of uint8 images against reference images (or their cached statistics)."""
    _check_metric_names(metrics)
    reference, hit = None, False
    if any(_METRICS[m][1] for m in metrics):
        if reference_images is None:
            raise EvaluationError(f"metrics {list(metrics)} need reference images")
        reference, _, hit = reference_statistics(
            extractor,
            reference_images,
            reference_key,
            cache=cache,
            count=reference_count,
            batch_size=batch_size,
        )
    fake = extractor.extract(fake_images, batch_size)
    return EvaluationResult(calc_metrics(metrics, fake, reference, seed), hit)


def evaluate_generator(
    G: nn.Module,
    reference_images: torch.Tensor | Iterable[torch.Tensor],
    reference_key: str | None,
    n_samples: int,
    *,
    metrics: Sequence[str] = ("is", "fid", "kid"),
    extractor: FeatureExtractor | None = None,
    weights_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    seed: int = 0,
    cache: StatsCache | None = None,
    reference_count: int | None = None,
    reference_labels: torch.Tensor | None = None,
    classes: Sequence[int] | None = None,
    class_samples: int | None = None,
) -> EvaluationResult:
    """IS/FID/KID of G's samples (classes uniform) against reference images.

    With ``classes``, also ``fid_class_<k>`` for each (G sampled at class k against the reference
    images labelled k; ``class_samples`` images each, default as many as the reference has) and
    their mean ``intra_fid``.
    """
    _check_metric_names(metrics)
    classes = [int(k) for k in classes or ()]
    if extractor is None:
        extractor = FeatureExtractor(weights_path, device or _module_device(G))
    gen_device = device or _module_device(G)
    reference, per_class, hit = reference_statistics(
        extractor,
        reference_images,
        reference_key,
        cache=cache,
        count=reference_count,
        labels=reference_labels,
        classes=classes,
        batch_size=batch_size,
    )
    fake = extractor.extract(
        generate_images(G, n_samples, batch_size=batch_size, seed=seed, device=gen_device),
        batch_size,
    )
    out = calc_metrics(metrics, fake, reference, seed)
    for k in classes:
        n = class_samples or per_class[k].count
        feats = extractor.extract(
            generate_images(
                G, n, batch_size=batch_size, seed=seed + 1 + k, class_index=k, device=gen_device
            ),
            batch_size,
        )
        out[f"fid_class_{k}"] = frechet_distance(feats.pool, per_class[k].mu, per_class[k].sigma)
    if classes:
        out["intra_fid"] = float(np.mean([out[f"fid_class_{k}"] for k in classes]))
    return EvaluationResult(out, hit)


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


def make_evaluator(
    reference_images: torch.Tensor | Iterable[torch.Tensor],
    reference_key: str,
    *,
    n_samples: int = 10_000,
    metrics: Sequence[str] = ("is", "fid"),
    weights_path: str | os.PathLike | None = None,
    cache: StatsCache | None = None,
    reference_labels: torch.Tensor | None = None,
    classes: Sequence[int] | None = None,
    batch_size: int = 64,
    seed: int = 0,
    extractor: FeatureExtractor | None = None,
) -> Callable[[int, nn.Module], dict[str, float]]:
    """``evaluator(step, G_ema) -> metrics`` for the trainer's eval hook.

    The weights are resolved now, so a run configured to evaluate without them fails before
    training starts; the network is built on G's device at the first call and kept.
    """
    _check_metric_names(metrics)
    weights = (
        extractor.weights_path if extractor is not None else resolve_inception_weights(weights_path)
    )
    cache = cache if cache is not None else MemoryStatsCache()

    def evaluator(step: int, G: nn.Module) -> dict[str, float]:
        nonlocal extractor
        if extractor is None:
            extractor = FeatureExtractor(weights, _module_device(G))
        result = evaluate_generator(
            G,
            reference_images,
            reference_key,
            n_samples,
            metrics=metrics,
            extractor=extractor,
            batch_size=batch_size,
            seed=seed,
            cache=cache,
            reference_labels=reference_labels,
            classes=classes,
        )
        return dict(result)

    return evaluator


def config_reference_key(cfg) -> str:  # noqa: ANN001  (a TrainConfig)
    """The reference set's identity for a config: data set (with its root), resolution, split."""
    name = f"{cfg.dataset}:{cfg.data_root}" if cfg.data_root else cfg.dataset
    return reference_key_for(name, cfg.resolution)


def make_training_evaluator(
    trainer,  # noqa: ANN001  (a sagan_core.trainer.Trainer; its dataset exists once it runs)
    *,
    weights_path: str | os.PathLike | None = None,
    cache: StatsCache | None = None,
    metrics: Sequence[str] = ("is", "fid", "kid"),
) -> Callable[[int, nn.Module], dict[str, float]]:
    """The trainer's `eval_every` hook: IS/FID/KID of G_ema against the training set.

    The weights are resolved now, so a run that cannot evaluate fails before it trains; the
    reference set (at most `eval_reference_samples` images) is read at the first evaluation.
    """
    weights = resolve_inception_weights(weights_path)
    inner = None

    def evaluator(step: int, G: nn.Module) -> dict[str, float]:
        nonlocal inner
        if inner is None:
            cfg = trainer.config
            images, _ = reference_subset(trainer.dataset.images, None, cfg.eval_reference_samples)
            inner = make_evaluator(
                images,
                config_reference_key(cfg),
                n_samples=cfg.eval_samples,
                metrics=metrics,
                weights_path=weights,
                cache=cache,
                seed=cfg.seed,
            )
        return inner(step, G)

    return evaluator


def make_dataset_evaluator(
    dataset, *, split: str = "train", **kwargs
) -> Callable[[int, nn.Module], dict[str, float]]:
    """make_evaluator against a ``sagan_core.data`` dataset (``name``, ``resolution``, ``images``,
    ``labels``), its statistics keyed by dataset name, resolution and split."""
    key = reference_key_for(dataset.name, dataset.resolution, split)
    return make_evaluator(dataset.images, key, reference_labels=dataset.labels, **kwargs)
