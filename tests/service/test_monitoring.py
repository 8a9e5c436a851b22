"""Prometheus with real processes (#24): `sagan api` and `sagan worker` on PostgreSQL, Redis and
moto S3; both scraped over HTTP and parsed with prometheus-client's own parser."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from servicekit import (
    AUTH,
    TINY_TRAIN,
    ProcessGroup,
    free_port,
    service_env,
    wait_healthy,
    wait_job,
    wait_until,
)


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[str, list]:
    """name -> [(labels, value)] of every sample, as Prometheus reads the page."""
    r = httpx.get(url, headers=headers or {}, timeout=30)
    assert r.status_code == 200, r.text
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(samples: dict[str, list], name: str, **labels: str) -> float | None:
    found = [
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def test_api_and_worker_metrics_follow_a_job_from_the_queue_to_its_end(
    distributed_env: dict[str, str], tmp_path: Path
) -> None:
    worker_port, port = free_port(), free_port()
    env = service_env(**distributed_env, SAGAN_WORKER_METRICS_PORT=str(worker_port))
    base = f"http://127.0.0.1:{port}"
    config = {**TINY_TRAIN, "steps": 40, "log_every": 1, "checkpoint_every": 20}
    with (
        ProcessGroup(tmp_path) as group,
        httpx.Client(base_url=base, timeout=30, headers=AUTH) as client,
    ):
        api = group.start(["api", "--port", str(port)], env, "api")
        wait_healthy(base, api)
        # Only an admin's token reads the fleet's figures.
        r = client.get("/metrics", headers={"Authorization": "Bearer sgn_nobody"})
        assert r.status_code == 401
        job_id = client.post("/jobs", json={"kind": "train", "config": config}).json()["id"]
        client.get(f"/jobs/{job_id}")
        client.get("/jobs/0123456789abcdef0123456789abcdef")  # a 404 of another id

        # No worker runs: the job waits, and the queue's oldest age grows.
        first = scrape(f"{base}/metrics", AUTH)
        assert value(first, "sagan_jobs", kind="train", state="queued") == 1
        assert value(first, "sagan_queue_jobs", queue="train") == 1
        assert value(first, "sagan_workers_alive", queue="train") == 0
        time.sleep(1.5)
        later = scrape(f"{base}/metrics", AUTH)
        waited = value(later, "sagan_queue_oldest_age_seconds", queue="train")
        assert waited >= value(first, "sagan_queue_oldest_age_seconds", queue="train") + 1.0

        # Requests are counted by route template: no id in any label.
        routes = {lab["route"] for lab, _ in later["sagan_http_requests_total"]}
        assert {"/jobs", "/jobs/{job_id}", "/metrics"} <= routes, routes
        assert value(later, "sagan_http_requests_total", route="/jobs/{job_id}", status="404") == 1
        assert value(later, "sagan_http_requests_total", route="/jobs/{job_id}", status="200") == 1
        latency = [lab for lab, _ in later["sagan_http_request_duration_seconds_count"]]
        assert all(job_id not in str(lab) and "0123" not in str(lab) for lab in latency), latency

        worker = group.start(["worker"], env, "worker")
        worker.wait_for(r"ready\.", 90)

        def running() -> dict | None:
            s = scrape(f"{base}/metrics", AUTH)
            step = value(s, "sagan_job_step", job_id=job_id, kind="train")
            return s if step and step > 0 else None

        during = wait_until(running, 120, "the job's step on /metrics", api, worker)
        assert value(during, "sagan_jobs", kind="train", state="running") == 1
        assert value(during, "sagan_queue_jobs", queue="train") == 0
        assert value(during, "sagan_workers_alive", queue="train") == 1
        assert 0 <= value(during, "sagan_job_heartbeat_age_seconds", job_id=job_id) < 30
        assert value(during, "sagan_job_attempts", job_id=job_id) == 1
        [(labels, age)] = during["sagan_worker_heartbeat_age_seconds"]
        assert labels["worker"].endswith(f":{worker.proc.pid}") and 0 <= age < 30

        # The worker's own port: its job's step as it trains; no GPU series on a CPU.
        on_worker = wait_until(
            lambda: (s := scrape(f"http://127.0.0.1:{worker_port}/metrics"))
            and value(s, "sagan_worker_job_step", job_id=job_id)
            and s,
            60, "the job's step on the worker's port", worker,
        )  # fmt: skip
        assert value(on_worker, "sagan_worker_job_step", job_id=job_id) > 0
        assert not on_worker.get("sagan_worker_gpu_memory_gib"), on_worker.get(
            "sagan_worker_gpu_memory_gib"
        )

        assert wait_job(client, job_id, ("succeeded", "failed"), 240, api, worker)["state"] == (
            "succeeded"
        )
        after = scrape(f"{base}/metrics", AUTH)
        assert value(after, "sagan_jobs", kind="train", state="succeeded") == 1
        assert value(after, "sagan_jobs", kind="train", state="running") == 0
        assert value(after, "sagan_job_step", job_id=job_id, kind="train") is None
        uploads = scrape(f"http://127.0.0.1:{worker_port}/metrics")
        assert value(uploads, "sagan_checkpoint_upload_seconds_count") >= 2  # steps 20 and 40
        assert value(uploads, "sagan_checkpoint_upload_bytes_total") > 0
        assert value(uploads, "sagan_worker_job_step", job_id=job_id) is None  # left with it
