"""The worker's Prometheus port (SAGAN_WORKER_METRICS_PORT): what only a worker knows of the job it
runs, set as it happens, and served by prometheus-client's own HTTP server."""

from __future__ import annotations

import logging

from store.settings import Settings
from store.telemetry import (
    WORKER_GPU_MEMORY,
    WORKER_GPU_POWER,
    WORKER_GPU_UTIL,
    WORKER_JOB_RATE,
    WORKER_JOB_STEP,
    scrape_registry,
)

log = logging.getLogger(__name__)
# A train metric (sagan_core.gpu_stats) -> the gauge and labels that carry it.
GPU_FIGURES = {
    "gpu_mem_gib": (WORKER_GPU_MEMORY, ("allocated",)),
    "gpu_mem_reserved_gib": (WORKER_GPU_MEMORY, ("reserved",)),
    "gpu_util": (WORKER_GPU_UTIL, ()),
    "gpu_power_w": (WORKER_GPU_POWER, ()),
}
_served: tuple[str, int] | None = None


def serve(settings: Settings) -> tuple[str, int] | None:
    """Start the metrics server once per process when a port is set; (address, port) or None.
    A port already taken is logged, not fatal: the worker trains without it."""
    global _served
    if settings.worker_metrics_port is None or _served is not None:
        return _served
    from prometheus_client import start_http_server

    address, port = settings.worker_metrics_addr, settings.worker_metrics_port
    try:
        start_http_server(port, addr=address, registry=scrape_registry())
    except OSError as e:
        log.error("worker metrics not served on %s:%d: %s", address, port, e)
        return None
    _served = (address, port)
    log.info("worker metrics on http://%s:%d/metrics", address, port)
    return _served


def progress(job_id: str, step: int | None, images_per_s: float | None) -> None:
    if step is not None:
        WORKER_JOB_STEP.labels(job_id).set(step)
    if images_per_s is not None:
        WORKER_JOB_RATE.labels(job_id).set(images_per_s)


def gpu(job_id: str, metrics: dict[str, float]) -> None:
    """The GPU figures among a job's train metrics (none on CPU: no series at all)."""
    for name, (gauge, labels) in GPU_FIGURES.items():
        if name in metrics:
            gauge.labels(job_id, *labels).set(metrics[name])


def forget(job_id: str) -> None:
    """A job that left this worker leaves no series behind."""
    for gauge in (WORKER_JOB_STEP, WORKER_JOB_RATE, WORKER_GPU_UTIL, WORKER_GPU_POWER):
        try:
            gauge.remove(job_id)
        except KeyError:
            pass
    for pool in ("allocated", "reserved"):
        try:
            WORKER_GPU_MEMORY.remove(job_id, pool)
        except KeyError:
            pass
