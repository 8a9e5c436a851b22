"""What evaluation needs from the service: Inception weights, reference stats in storage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from store.settings import Settings
from store.storage import Storage
from worker.datasets import stored_as_packed

log = logging.getLogger(__name__)

EVAL_METRICS = ("is", "fid", "kid")  # what training-time and evaluate jobs score


class StorageStatsCache:
    """sagan_core.evaluate's StatsCache over object storage; keys come as `fid-stats/...`."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def get(self, key: str) -> bytes | None:
        return self.storage.get_bytes(key)

    def put(self, key: str, data: bytes) -> None:
        self.storage.put_bytes(key, data)


def local_inception_weights(settings: Settings, storage: Storage) -> Path:
    """A local file of the Inception weights (the core's order; see resolve_inception_weights).

    SAGAN_INCEPTION_WEIGHTS may also be a storage key: downloaded once into <data_dir>/inception/.
    """
    from sagan_core import evaluate

    def from_storage(key: str) -> Path:
        cached = (settings.data_dir / "inception" / Path(key).name).resolve()
        if cached.is_file():
            return cached
        try:
            found = storage.exists(key)
        except Exception as e:  # an invalid key or an unreachable store: say which setting to fix
            found, reason = False, f"{type(e).__name__}: {e}"
        else:
            reason = "it is neither a local file nor a key in object storage"
        if not found:
            raise LookupError(f"{evaluate.WEIGHTS_ENV}={key!r}: {reason}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_name(cached.name + ".part")
        storage.download(key, part)
        part.replace(cached)
        log.info("Inception weights %s downloaded from storage to %s", key, cached)
        return cached

    return evaluate.resolve_inception_weights(
        settings.inception_weights, fetch=from_storage, download=settings.inception_download
    )


def train_evaluator(
    dataset,  # noqa: ANN001  (the run's sagan_core.data dataset)
    config,  # noqa: ANN001  (the run's resolved TrainConfig)
    settings: Settings,
    storage: Storage,
    reference_key: str | None = None,
) -> Callable[[int, object], dict[str, float]]:
    """The trainer's evaluator, its reference statistics cached in object storage (a stored
    dataset's under `reference_key`, its content hash)."""
    from sagan_core import evaluate

    inner = evaluate.make_training_evaluator(
        dataset,
        config,
        weights_path=local_inception_weights(settings, storage),
        cache=StorageStatsCache(storage),
        metrics=EVAL_METRICS,
        reference_key=reference_key,
    )

    def evaluator(step: int, G: object) -> dict[str, float]:
        return with_reference(inner(step, G), config, reference_key)

    return evaluator


def with_reference(result, ref_cfg, content_hash: str | None):  # noqa: ANN001, ANN201
    """The scores, their protocol's reference named: the data set (a stored one by id and
    content hash, which is also its statistics' key)."""
    protocol = getattr(result, "protocol", None)
    if protocol is not None:
        ref = protocol.setdefault("reference", {})
        ref["dataset"] = ref_cfg.dataset
        if ref_cfg.dataset == "stored":
            ref["dataset_id"], ref["content_hash"] = ref_cfg.dataset_id, content_hash
        elif ref_cfg.data_root:
            ref["data_root"] = ref_cfg.data_root
    return result


def evaluate_model(
    checkpoint: Path,
    job_config: dict,
    settings: Settings,
    storage: Storage,
    device: str,
    job_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """IS/FID/KID (per-class FID for job_config["classes"]) of a stored model's EMA generator:
    a dict of the scores with `.protocol`, how they were measured.

    A stored reference dataset comes from this machine's dataset cache, its statistics keyed by
    its content hash."""
    from sagan_core import evaluate
    from sagan_core.checkpoint import load_generator
    from sagan_core.data import build_dataset

    weights = local_inception_weights(settings, storage)
    G, cfg, _ = load_generator(checkpoint, device=device)
    ref_cfg = cfg.reference_data(job_config.get("dataset"), job_config.get("data_root"))
    if job_config.get("dataset_id"):
        ref_cfg.dataset_id = job_config["dataset_id"]
    if ref_cfg.dataset == "stored":
        with stored_as_packed(settings, storage, job_id or "", ref_cfg) as (packed, key):
            dataset = build_dataset(packed)
            result = _score(G, cfg, dataset, key, job_config, weights, device, storage, progress)
            return with_reference(result, ref_cfg, key)
    key = evaluate.config_reference_key(ref_cfg)
    dataset = build_dataset(ref_cfg)
    result = _score(G, cfg, dataset, key, job_config, weights, device, storage, progress)
    return with_reference(result, ref_cfg, None)


def _score(G, cfg, dataset, key, job_config, weights, device, storage, progress=None) -> dict:  # noqa: ANN001
    from sagan_core import evaluate

    n = int(job_config.get("samples") or cfg.eval_samples)
    classes = job_config.get("classes") or None
    images, labels = evaluate.reference_subset(
        dataset.images, dataset.labels, cfg.eval_reference_samples, seed=0
    )
    return evaluate.evaluate_generator(
        G,
        images,
        key,
        n,
        metrics=tuple(job_config.get("metrics") or EVAL_METRICS),
        weights_path=weights,
        device=device,
        cache=StorageStatsCache(storage),
        reference_labels=labels,
        classes=classes,
        progress=progress,
    )
