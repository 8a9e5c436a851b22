"""Stored datasets on the worker: the `pack` job, and a stored dataset fetched for a run.

`pack_job(id, settings)` downloads the uploaded source (zip/tar/tar.gz of class folders, or a
packed file), checks it (sagan_core.archive), writes one packed file per asked resolution to
storage and makes the dataset `ready`, or `failed` with the one-line reason (the job's error too).

`stored_dataset(...)` is what a train or evaluate job naming a stored dataset runs in: the owner's
ready dataset, its packed file at the run's resolution taken from this machine's cache
(worker.dataset_cache; downloaded once, the download shown in the job's events), and the key its
FID reference statistics are stored under (the dataset's content hash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import update

from sagan_core.config import TrainConfig
from store import datasets as stored
from store import jobs
from store.models import Dataset, Job
from store.outages import is_outage
from store.settings import Settings
from store.storage import Storage, storage_from_settings
from worker import job_life
from worker.dataset_cache import DatasetCache
from worker.job_life import failure_message, worker_name
from worker.liveness import JobLiveness

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 1.0


class PackCancelled(Exception):
    pass


def reference_key(content_hash: str, resolution: int) -> str:
    """The FID reference statistics' identity of a stored dataset: its content, not its name."""
    from sagan_core.evaluate import reference_key_for

    return reference_key_for(f"sha256.{content_hash}", resolution)


def _event(settings: Settings, job_id: str, text: str) -> None:
    job_life.in_transaction(
        settings, f"job {job_id}: event", lambda s: jobs.add_event(s, job_id, "info", text)
    )


def pack_job(job_id: str, settings: Settings) -> str | None:
    """Pack a stored dataset; returns the state it left the job in (None: not ours)."""
    worker = worker_name()
    row = job_life.claim(settings, job_id, worker, "pack")
    if row is None:
        return None
    dataset_id = row["config"]["dataset_id"]
    storage = storage_from_settings(settings)
    run_dir = job_life.run_dir(settings, job_id)
    try:
        with JobLiveness(settings, job_id, worker) as liveness:
            summary, content_hash = _pack(job_id, settings, worker, row, storage, run_dir, liveness)
    except PackCancelled:
        job_life.in_transaction(
            settings, "dataset", lambda s: _dataset_failed(s, dataset_id, "pack job cancelled")
        )
        return job_life.finish(settings, job_id, worker, jobs.CANCELLED)
    except Exception as e:
        if is_outage(e):
            return job_life.release(settings, job_id, worker, f"outage ({e})", kind="pack")
        message = failure_message(e, None)
        log.warning("pack job %s failed: %s", job_id, message)
        job_life.in_transaction(
            settings, "dataset", lambda s: _dataset_failed(s, dataset_id, message)
        )
        return job_life.finish(settings, job_id, worker, jobs.FAILED, message)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    def ready(session) -> None:  # noqa: ANN001
        stored.set_state(
            session,
            dataset_id,
            stored.READY,
            reason=None,
            class_names=summary.class_names,
            class_counts=summary.class_counts,
            image_count=summary.images,
            content_hash=content_hash,
            resolutions=sorted(summary.outputs),
            packed={
                str(r): {"key": out.key, "size": out.size, "sha256": out.sha256}
                for r, out in summary.outputs.items()
            },
        )
        jobs.heartbeat(session, job_id, worker, step=summary.images)

    job_life.in_transaction(settings, f"dataset {dataset_id}: ready", ready)
    return job_life.finish(settings, job_id, worker, jobs.SUCCEEDED)


def _dataset_failed(session, dataset_id: str, reason: str) -> None:  # noqa: ANN001
    stored.set_state(session, dataset_id, stored.FAILED, reason=reason)


@dataclass
class _Uploaded:
    key: str
    size: int
    sha256: str


def _pack(
    job_id: str,
    settings: Settings,
    worker: str,
    row: dict,
    storage: Storage,
    run_dir: Path,
    liveness: JobLiveness,
):  # noqa: ANN202  (PackSummary with uploaded outputs, content hash)
    from sagan_core.archive import HEAD_BYTES, detect_format, pack_source
    from sagan_core.data import DatasetError

    config = row["config"]
    dataset_id, resolutions = config["dataset_id"], list(config["resolutions"])
    ds = job_life.in_transaction(settings, "dataset", lambda s: _snapshot(s, dataset_id))
    if ds is None:
        raise DatasetError(f"dataset {dataset_id} no longer exists")
    source = run_dir / "source"
    _event(settings, job_id, f"downloading the source ({ds['size_bytes']} bytes)")
    storage.download(ds["source_key"], source)
    with open(source, "rb") as f:
        head = f.read(HEAD_BYTES)
    fmt = detect_format(head)
    if fmt is None:
        raise DatasetError("the source is not a zip, tar, tar.gz or packed file")
    job_life.in_transaction(
        settings,
        "dataset",
        lambda s: stored.set_state(s, dataset_id, stored.PACKING, source_format=fmt),
    )
    sha = hashlib.sha256()
    with open(source, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    content_hash = sha.hexdigest()
    if ds["content_hash"] and ds["content_hash"] != content_hash:
        raise DatasetError("the stored source does not match the hash of the upload: corrupt")
    if not resolutions:  # none asked for: a packed file's own, else the config's default
        if fmt == "packed":
            from sagan_core.archive import read_packed_header

            resolutions = [read_packed_header(source)[0]["resolution"]]
        else:
            resolutions = [32]
    _event(settings, job_id, f"checking and packing a {fmt} source at {resolutions} px")

    last = [0.0]

    def progress(done: int, total: int) -> None:
        if liveness.state == jobs.CANCELLING:
            raise PackCancelled
        now = time.monotonic()
        if done == total or now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now

            def beat(session) -> None:  # noqa: ANN001
                session.execute(update(Job).where(Job.id == job_id).values(total_steps=total))
                jobs.heartbeat(session, job_id, worker, step=done)

            job_life.in_transaction(settings, f"job {job_id}: progress", beat)

    out_dir = run_dir / "packed"
    out_dir.mkdir()
    summary = pack_source(source, fmt, resolutions, out_dir, progress)
    for r, out in summary.outputs.items():
        key = stored.packed_key(dataset_id, r)
        if fmt == "packed" and out.path == source:
            key = ds["source_key"]  # a packed upload at this resolution is its own packed file
        else:
            storage.put_file(key, out.path)
        summary.outputs[r] = _Uploaded(key, out.size, out.sha256)
    pairs = zip(summary.class_names, summary.class_counts, strict=True)
    shown = ", ".join(f"{name} {count}" for name, count in pairs)
    _event(
        settings,
        job_id,
        f"packed {summary.images} images in {len(summary.class_names)} classes ({shown[:300]})",
    )
    return summary, content_hash


def _snapshot(session, dataset_id: str) -> dict | None:  # noqa: ANN001
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        return None
    return {
        "id": ds.id,
        "owner": ds.owner,
        "name": ds.name,
        "state": ds.state,
        "source_key": ds.source_key,
        "size_bytes": ds.size_bytes,
        "content_hash": ds.content_hash,
        "packed": dict(ds.packed or {}),
    }


def dataset_cache(settings: Settings) -> DatasetCache:
    return DatasetCache(settings.resolved_dataset_cache_dir(), settings.dataset_cache_bytes)


@dataclass
class LocalDataset:
    path: Path  # the packed file in this machine's cache (read as a memmap)
    reference_key: str  # FID statistics, by content hash
    name: str


@contextmanager
def stored_as_packed(
    settings: Settings, storage: Storage, job_id: str, config: TrainConfig
) -> Iterator[tuple[TrainConfig, str]]:
    """A config naming a stored dataset as one naming its packed file in this machine's cache,
    and the key of its FID reference statistics; the file stays in use until the block ends."""
    with stored_dataset(settings, storage, job_id, config.dataset_id, config.resolution) as local:
        yield (
            dataclasses.replace(config, dataset="packed", data_root=str(local.path)),
            local.reference_key,
        )


@contextmanager
def stored_dataset(
    settings: Settings, storage: Storage, job_id: str, dataset_id: str, resolution: int
) -> Iterator[LocalDataset]:
    """The packed file of the job owner's stored dataset at `resolution`, from the cache."""
    from sagan_core.data import DatasetError

    def look(session) -> tuple[dict | None, str | None]:  # noqa: ANN001
        job = session.get(Job, job_id)
        return _snapshot(session, dataset_id), job.owner if job else None

    ds, owner = job_life.in_transaction(settings, f"job {job_id}: dataset", look)
    if ds is None or ds["owner"] != owner:
        raise DatasetError(f"stored dataset {dataset_id} not found")
    if ds["state"] != stored.READY:
        raise DatasetError(f"stored dataset {ds['name']!r} is {ds['state']}, not ready")
    packed = ds["packed"].get(str(resolution))
    if packed is None:
        have = ", ".join(sorted(ds["packed"], key=int)) or "none"
        raise DatasetError(
            f"stored dataset {ds['name']!r} is not packed at {resolution} px (it has: {have})"
        )
    label = f"dataset {ds['name']} ({resolution} px)"
    with dataset_cache(settings).use(
        packed["sha256"],
        int(packed["size"]),
        lambda part: storage.download(packed["key"], part),
        note=lambda text: _event(settings, job_id, text),
        label=label,
    ) as path:
        yield LocalDataset(path, reference_key(ds["content_hash"], resolution), ds["name"])
