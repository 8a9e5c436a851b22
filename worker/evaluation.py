"""What evaluation needs from the service: Inception weights, reference stats in storage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from store.settings import Settings
from store.storage import Storage

log = logging.getLogger(__name__)

WEIGHTS_SETTING = "SAGAN_INCEPTION_WEIGHTS"
EVAL_METRICS = ("is", "fid", "kid")
TRAIN_EVAL_METRICS = ("is", "fid", "kid")


class StorageStatsCache:
    """sagan_core.evaluate's StatsCache over object storage; keys come as `fid-stats/...`."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def get(self, key: str) -> bytes | None:
        return self.storage.get_bytes(key)

    def put(self, key: str, data: bytes) -> None:
        self.storage.put_bytes(key, data)


def resolve_inception_weights(settings: Settings, storage: Storage) -> Path:
    """A local file of the Inception weights, or EvaluationError naming SAGAN_INCEPTION_WEIGHTS.

    The setting is a local path, or a storage key downloaded once into <data_dir>/inception/.
    Unset, the core looks in torch hub's cache and downloads where the internet is reachable.
    """
    from sagan_core import evaluate

    configured = settings.inception_weights
    if not configured:
        return evaluate.resolve_inception_weights(None, download=True)
    local = Path(configured).expanduser()
    if local.is_file():
        return local
    cached = (settings.data_dir / "inception" / Path(configured).name).resolve()
    if cached.is_file():
        return cached
    try:
        found = storage.exists(configured)
    except Exception as e:  # an invalid key or an unreachable store: say which setting to fix
        found, reason = False, f"{type(e).__name__}: {e}"
    else:
        reason = "it is neither a local file nor a key in object storage"
    if not found:
        raise evaluate.EvaluationError(
            f"Inception weights not found: {WEIGHTS_SETTING}={configured!r}: {reason}. Set "
            f"{WEIGHTS_SETTING} to a local copy or storage key of {evaluate.INCEPTION_WEIGHTS_FILE}"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    part = cached.with_name(cached.name + ".part")
    storage.download(configured, part)
    part.replace(cached)
    log.info("Inception weights %s downloaded from storage to %s", configured, cached)
    return cached


def train_evaluator(
    trainer, settings: Settings, storage: Storage
) -> Callable[[int, object], dict[str, float]]:
    """The trainer's eval hook, its reference statistics cached in object storage."""
    from sagan_core import evaluate

    return evaluate.make_training_evaluator(
        trainer,
        weights_path=resolve_inception_weights(settings, storage),
        cache=StorageStatsCache(storage),
        metrics=TRAIN_EVAL_METRICS,
    )


def evaluate_model(
    checkpoint: Path,
    job_config: dict,
    settings: Settings,
    storage: Storage,
    device: str,
) -> dict[str, float]:
    """IS/FID/KID (per-class FID for job_config["classes"]) of a stored model's EMA generator."""
    from sagan_core import evaluate
    from sagan_core.checkpoint import load_generator
    from sagan_core.data import build_dataset

    weights = resolve_inception_weights(settings, storage)
    G, cfg, _ = load_generator(checkpoint, device=device)
    ref = cfg.to_dict()
    for name in ("dataset", "data_root"):
        if job_config.get(name):
            ref[name] = job_config[name]
    if job_config.get("dataset") and not job_config.get("data_root"):
        ref["data_root"] = None  # a different dataset does not inherit the training data root
    ref["num_classes"] = None if ref["dataset"] != cfg.dataset else ref["num_classes"]
    ref_cfg = type(cfg).from_dict(ref)
    dataset = build_dataset(ref_cfg)
    n = int(job_config.get("samples") or cfg.eval_samples)
    classes = job_config.get("classes") or None
    images, labels = evaluate.reference_subset(
        dataset.images, dataset.labels, cfg.eval_reference_samples, seed=0
    )
    return dict(
        evaluate.evaluate_generator(
            G,
            images,
            evaluate.config_reference_key(ref_cfg),
            n,
            metrics=tuple(job_config.get("metrics") or EVAL_METRICS),
            weights_path=weights,
            device=device,
            cache=StorageStatsCache(storage),
            reference_labels=labels,
            classes=classes,
        )
    )
