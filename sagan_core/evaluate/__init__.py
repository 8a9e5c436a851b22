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

The rooms: ``inception`` (the network, its weights, features), ``reference`` (real-image
statistics and their cache), ``scores`` (FID, IS, KID by name), ``generator`` (a generator's
samples scored, and the evaluators the trainer calls). The sample counts are named once, in the
torch-free ``sagan_core.config`` (so a config and the API read them without torch): ``EVAL_SAMPLES``
for an evaluation, ``TRAINING_EVAL_SAMPLES`` for the trainer's periodic one.
"""

from ..config import EVAL_SAMPLES, TRAINING_EVAL_SAMPLES
from .errors import EvaluationError
from .generator import (
    EvaluationResult,
    draw_classes,
    evaluate_generator,
    evaluate_images,
    generate_images,
    make_dataset_evaluator,
    make_evaluator,
    make_training_evaluator,
)
from .inception import (
    INCEPTION_NAME,
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    WEIGHTS_ENV,
    FeatureExtractor,
    Features,
    resolve_inception_weights,
)
from .reference import (
    DirectoryStatsCache,
    MemoryStatsCache,
    ReferenceStats,
    StatsCache,
    config_reference_key,
    reference_key_for,
    reference_statistics,
    reference_subset,
    stats_key,
)
from .scores import available_metrics, calc_metrics, frechet_distance, register_metric

__all__ = [
    "EVAL_SAMPLES",
    "INCEPTION_NAME",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "WEIGHTS_ENV",
    "DirectoryStatsCache",
    "EvaluationError",
    "EvaluationResult",
    "FeatureExtractor",
    "Features",
    "MemoryStatsCache",
    "ReferenceStats",
    "StatsCache",
    "TRAINING_EVAL_SAMPLES",
    "available_metrics",
    "calc_metrics",
    "config_reference_key",
    "draw_classes",
    "evaluate_generator",
    "evaluate_images",
    "frechet_distance",
    "generate_images",
    "make_dataset_evaluator",
    "make_evaluator",
    "make_training_evaluator",
    "reference_key_for",
    "reference_statistics",
    "reference_subset",
    "register_metric",
    "resolve_inception_weights",
    "stats_key",
]
