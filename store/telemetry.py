"""What a process of the service counts for Prometheus: the metric objects every part shares, and
the registry a scrape reads.

prometheus-client's own types throughout. Under several processes (uvicorn --workers N, a prefork
worker) the operator sets PROMETHEUS_MULTIPROC_DIR to an empty directory before they start: each
process then writes its counts to files there, and `scrape_registry()` adds them up at scrape time
(prometheus-client's multiprocess mode). What the database knows (jobs by state, queue ages,
workers alive) is read at scrape time by api.metrics, so it is the same from every process.

The names, and what the Grafana dashboard (docker/grafana/) draws from them:

API (`GET /metrics`):
  sagan_http_requests_total{method,route,status}        request rate by route template
  sagan_http_request_duration_seconds{method,route}     latency histogram (p50/p99)
  sagan_jobs{kind,state}                                jobs by state
  sagan_queue_jobs{queue} / sagan_queue_oldest_age_seconds{queue}
  sagan_workers_alive{queue}
  sagan_job_step{job_id,kind} / sagan_job_images_per_second{job_id}
  sagan_job_heartbeat_age_seconds{job_id} / sagan_job_attempts{job_id}
Worker (`SAGAN_WORKER_METRICS_PORT`):
  sagan_checkpoint_upload_seconds (histogram) / sagan_checkpoint_upload_bytes_total
  sagan_outage_retries_total{service}                   database, storage, broker calls retried
  sagan_worker_job_step{job_id} / sagan_worker_job_images_per_second{job_id}
  sagan_worker_gpu_memory_gib{job_id,pool}              pool: allocated | reserved (peak)
  sagan_worker_gpu_utilization_ratio{job_id} / sagan_worker_gpu_power_watts{job_id}
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# Seconds: a route answers in milliseconds; a sample grid on CPU takes seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A checkpoint is kilobytes (digits) to a gigabyte (128 px): its upload, up to minutes.
UPLOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

HTTP_REQUESTS = Counter(
    "sagan_http_requests",
    "API requests answered, by route template (not raw path) and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "sagan_http_request_duration_seconds",
    "Seconds from a request's arrival to its answer, by route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
CHECKPOINT_UPLOAD_SECONDS = Histogram(
    "sagan_checkpoint_upload_seconds",
    "Seconds to upload one checkpoint to storage and register it.",
    buckets=UPLOAD_BUCKETS,
)
CHECKPOINT_UPLOAD_BYTES = Counter(
    "sagan_checkpoint_upload_bytes", "Bytes of checkpoints uploaded to storage."
)
OUTAGE_RETRIES = Counter(
    "sagan_outage_retries",
    "Calls retried because a service was unavailable (store.outages).",
    ["service"],
)
# Worker-side figures of the job it runs (one job per worker process); "livesum" adds up the
# live processes' values under multiprocess mode, and a job runs in one of them.
WORKER_JOB_STEP = Gauge(
    "sagan_worker_job_step",
    "The step of the job this worker runs.",
    ["job_id"],
    multiprocess_mode="livesum",
)
WORKER_JOB_RATE = Gauge(
    "sagan_worker_job_images_per_second",
    "Training images per second of the job this worker runs (smoothed).",
    ["job_id"],
    multiprocess_mode="livesum",
)
WORKER_GPU_MEMORY = Gauge(
    "sagan_worker_gpu_memory_gib",
    "Peak GPU memory of the job since its last log window (torch's allocator), GiB.",
    ["job_id", "pool"],
    multiprocess_mode="livesum",
)
WORKER_GPU_UTIL = Gauge(
    "sagan_worker_gpu_utilization_ratio",
    "GPU utilisation over NVML's last sample period, 0..1.",
    ["job_id"],
    multiprocess_mode="livesum",
)
WORKER_GPU_POWER = Gauge(
    "sagan_worker_gpu_power_watts",
    "GPU power draw (NVML), watts.",
    ["job_id"],
    multiprocess_mode="livesum",
)


def service_of(what: str, error: BaseException) -> str:
    """`database`, `storage` or `broker`: which service an outage error came from."""
    module = type(error).__module__
    if module.startswith(("sqlalchemy", "psycopg", "sqlite3")):
        return "database"
    if module.startswith(("botocore", "boto3", "store.storage")) or "storage" in what.lower():
        return "storage"
    if module.startswith(("kombu", "redis", "amqp", "celery")):
        return "broker"
    return "other"


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def scrape_registry() -> CollectorRegistry:
    """The registry a scrape renders: this process's metrics, or every process's under
    multiprocess mode (a fresh registry per scrape, as prometheus-client's docs prescribe)."""
    if not multiprocess():
        return REGISTRY
    from prometheus_client import multiprocess as mp

    registry = CollectorRegistry()
    mp.MultiProcessCollector(registry)
    return registry
