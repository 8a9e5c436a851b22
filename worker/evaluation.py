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
    """The trainer's eval hook (IS, FID, KID against the training set, stats cached in storage).

    The weights are resolved now, so a run that cannot evaluate fails before it trains; the
    dataset is the trainer's own, read at the first evaluation (it is built when the run starts).
    """
    from sagan_core import evaluate

    weights = resolve_inception_weights(settings, storage)
    cache = StorageStatsCache(storage)
    inner = None

    def evaluator(step: int, G) -> dict[str, float]:  # noqa: ANN001
        nonlocal inner
        if inner is None:
            cfg, ds = trainer.config, trainer.dataset
            images, _ = evaluate.reference_subset(
                ds.images, None, cfg.eval_reference_samples, seed=0
            )
            inner = evaluate.make_evaluator(
                images,
                evaluate.reference_key_for(_dataset_id(cfg), cfg.resolution),
                n_samples=cfg.eval_samples,
                metrics=TRAIN_EVAL_METRICS,
                weights_path=weights,
                cache=cache,
                seed=cfg.seed,
            )
        return inner(step, G)

    return evaluator


def _dataset_id(cfg) -> str:  # noqa: ANN001
    """The reference set's identity: the dataset name, with its root for folder-like datasets."""
    return f"{cfg.dataset}:{cfg.data_root}" if cfg.data_root else cfg.dataset


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
            evaluate.reference_key_for(_dataset_id(ref_cfg), ref_cfg.resolution),
            n,
            metrics=tuple(job_config.get("metrics") or EVAL_METRICS),
            weights_path=weights,
            device=device,
            cache=StorageStatsCache(storage),
            reference_labels=labels,
            classes=classes,
        )
    )
