"""Prometheus for the API: a middleware counting requests by route template, and the text a scrape
of `GET /metrics` reads (this process's counts, or every process's under multiprocess mode, then
the fleet as the database has it: store.fleet)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from store.fleet import Fleet
from store.telemetry import HTTP_LATENCY, HTTP_REQUESTS, scrape_registry

UNMATCHED = "unmatched"  # no route took the path (a 404): one label, never the raw path


def route_template(scope: Scope) -> str:
    """`/jobs/{job_id}` for /jobs/3f2a...: the route the router matched (it writes it into the
    scope), so a label never holds an id and the series stay a fixed set."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class RequestMetrics:
    """Counts every HTTP request and times it to its last body byte, by method, route template
    and status (pure ASGI: no per-request task as BaseHTTPMiddleware makes)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception that escapes every handler: the server answers 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method, route = scope.get("method", ""), route_template(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - start)


class FleetCollector:
    """The database's figures as metric families, for one scrape's registry."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet

    def collect(self):  # noqa: ANN201  (prometheus-client's collector protocol)
        f = self.fleet
        jobs = GaugeMetricFamily("sagan_jobs", "Jobs by kind and state.", labels=["kind", "state"])
        for (kind, state), n in sorted(f.jobs.items()):
            jobs.add_metric([kind, state], n)
        yield jobs
        depth = GaugeMetricFamily(
            "sagan_queue_jobs", "Jobs waiting in each queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "sagan_queue_oldest_age_seconds",
            "Seconds the queue's oldest job has waited since it entered the queue (0: empty).",
            labels=["queue"],
        )
        for queue, q in sorted(f.queues.items()):
            depth.add_metric([queue], q.jobs)
            age.add_metric([queue], q.oldest_age_s)
        yield from (depth, age)
        alive = GaugeMetricFamily(
            "sagan_workers_alive",
            "Worker processes that beat within the stale window, by queue they consume.",
            labels=["queue"],
        )
        for queue, n in sorted(f.workers_alive.items()):
            alive.add_metric([queue], n)
        yield alive
        beat = GaugeMetricFamily(
            "sagan_worker_heartbeat_age_seconds",
            "Seconds since each live worker process's last heartbeat.",
            labels=["worker"],
        )
        for worker, seconds in sorted(f.worker_heartbeat_age_s.items()):
            beat.add_metric([worker], seconds)
        yield beat
        yield from self._running()

    def _running(self):  # noqa: ANN202
        step = GaugeMetricFamily(
            "sagan_job_step", "The step of each running job.", labels=["job_id", "kind"]
        )
        rate = GaugeMetricFamily(
            "sagan_job_images_per_second",
            "Training images per second of each running job (its worker's smoothed rate).",
            labels=["job_id"],
        )
        beat = GaugeMetricFamily(
            "sagan_job_heartbeat_age_seconds",
            "Seconds since each running job's last heartbeat (stale past the stale window).",
            labels=["job_id"],
        )
        attempts = GaugeMetricFamily(
            "sagan_job_attempts", "Times each running job was started.", labels=["job_id"]
        )
        for job in self.fleet.running:
            step.add_metric([job.id, job.kind], job.step)
            attempts.add_metric([job.id], job.attempts)
            if job.images_per_s is not None:
                rate.add_metric([job.id], job.images_per_s)
            if job.heartbeat_age_s is not None:
                beat.add_metric([job.id], job.heartbeat_age_s)
        yield from (step, rate, beat, attempts)


def exposition(fleet: Fleet) -> bytes:
    """One scrape's text: the processes' counters and histograms, then the fleet's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(fleet))
    return generate_latest(scrape_registry()) + generate_latest(registry)
