"""A generator scored: its samples against reference images, and the trainer's evaluators."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..config import EVAL_SAMPLES
from ..sample import eval_mode, latents, to_uint8
from .errors import EvaluationError
from .inception import FeatureExtractor, resolve_inception_weights
from .protocol import score_protocol
from .reference import (
    MemoryStatsCache,
    StatsCache,
    config_reference_key,
    reference_key_for,
    reference_statistics,
    reference_subset,
)
from .scores import METRICS, calc_metrics, check_metric_names, frechet_distance

# The random classes of an evaluation come from a stream of their own (seed + this), not z's.
CLASS_STREAM = 1_000_003


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
    if class_index is not None:
        labels = torch.full((n,), class_index, dtype=torch.long)
    elif num_classes > 0:  # their own stream: z is the seed's, as /samples and the judge draw it
        labels = draw_classes(n, num_classes, torch.Generator().manual_seed(seed + CLASS_STREAM))
    else:
        labels = None
    z_all = latents(seed, n, G.z_dim)  # (n, Z): image i of the seed is G(z_i, y_i) everywhere
    with eval_mode(G), torch.no_grad():
        for start in range(0, n, batch_size):
            z = z_all[start : start + batch_size].to(device)
            y = None if labels is None else labels[start : start + batch_size].to(device)
            yield to_uint8(G(z, y))


class EvaluationResult(dict):
    """Metric name -> value, plus whether the reference statistics came from the cache."""

    def __init__(
        self,
        metrics: dict[str, float],
        reference_cache_hit: bool = False,
        protocol: dict | None = None,
    ):
        super().__init__(metrics)
        self.reference_cache_hit = reference_cache_hit
        self.protocol = protocol  # how they were measured (sagan_core.evaluate.protocol)


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
    check_metric_names(metrics)
    reference, hit = None, False
    if any(METRICS[m][1] for m in metrics):
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
    progress: Callable[[int], None] | None = None,
) -> EvaluationResult:
    """IS/FID/KID of G's samples (classes uniform) against reference images; `progress(done)`
    hears how many of the `n_samples` images are generated.

    With ``classes``, also ``fid_class_<k>`` for each (G sampled at class k against the reference
    images labelled k; ``class_samples`` images each, default as many as the reference has) and
    their mean ``intra_fid``.
    """
    check_metric_names(metrics)
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
    batches = generate_images(G, n_samples, batch_size=batch_size, seed=seed, device=gen_device)
    fake = extractor.extract(_counted(batches, progress), batch_size)
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
    protocol = score_protocol(
        extractor,
        metrics=[*metrics, *(["intra_fid"] if classes else [])],
        generated=n_samples,
        seed=seed,
        resolution=getattr(G, "resolution", None),
        reference_key=reference_key,
        reference_count=reference.count,
        classes=classes,
        class_samples=class_samples,
    )
    return EvaluationResult(out, hit, protocol)


def _counted(
    batches: Iterator[torch.Tensor], progress: Callable[[int], None] | None
) -> Iterator[torch.Tensor]:
    done = 0
    for batch in batches:
        yield batch
        done += len(batch)
        if progress is not None:
            progress(done)


def make_evaluator(
    reference_images: torch.Tensor | Iterable[torch.Tensor],
    reference_key: str,
    *,
    n_samples: int = EVAL_SAMPLES,
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
    check_metric_names(metrics)
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
        return result  # a dict of the scores, with .protocol

    return evaluator


def make_training_evaluator(
    dataset,  # noqa: ANN001  (a sagan_core.data dataset: images, labels)
    config,  # noqa: ANN001  (the run's resolved TrainConfig)
    *,
    weights_path: str | os.PathLike | None = None,
    cache: StatsCache | None = None,
    metrics: Sequence[str] = ("is", "fid", "kid"),
    reference_key: str | None = None,
) -> Callable[[int, nn.Module], dict[str, float]]:
    """The trainer's `eval_every` evaluator: IS/FID/KID of G_ema against the training set.

    The weights are resolved now, so a run that cannot evaluate fails before it trains; the
    reference set is a seeded subset of at most `eval_reference_samples` training images. Its
    statistics are cached under `reference_key` (default: the config's dataset and resolution;
    the service keys a stored dataset by its content hash).
    """
    images, _ = reference_subset(dataset.images, None, config.eval_reference_samples)
    return make_evaluator(
        images,
        reference_key or config_reference_key(config),
        n_samples=config.eval_samples,
        metrics=metrics,
        weights_path=resolve_inception_weights(weights_path),
        cache=cache,
        seed=config.seed,
    )


def make_dataset_evaluator(
    dataset, *, split: str = "train", **kwargs
) -> Callable[[int, nn.Module], dict[str, float]]:
    """make_evaluator against a ``sagan_core.data`` dataset (``name``, ``resolution``, ``images``,
    ``labels``), its statistics keyed by dataset name, resolution and split."""
    key = reference_key_for(dataset.name, dataset.resolution, split)
    return make_evaluator(dataset.images, key, reference_labels=dataset.labels, **kwargs)
