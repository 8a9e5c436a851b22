"""`GET /metrics` (#24): an admin's, in Prometheus' text format, and the same sums from every
process under prometheus-client's multiprocess mode (uvicorn --workers N)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_metrics_need_an_admins_token_and_count_jobs_by_kind_and_state(embedded):
    r = embedded.client.get("/metrics")  # user "local": not an admin
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    job = embedded.client.post("/jobs", json={"kind": "train", "config": {"dataset": "digits"}})
    assert job.status_code == 201, job.text
    r = embedded.client.get("/metrics", headers=embedded.as_user("ops", admin=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)
    jobs = {(lab["kind"], lab["state"]): v for lab, v in got["sagan_jobs"]}
    assert jobs[("train", "queued")] == 1 and jobs[("train", "succeeded")] == 0
    assert ("evaluate", "running") in jobs and ("pack", "pruned") in jobs  # every pair, 0 too


def test_a_405_and_an_unknown_path_are_counted_without_the_raw_path(embedded):
    embedded.client.delete("/jobs")  # 405
    embedded.client.get("/no/such/path/abc123")
    got = samples(embedded.client.get("/metrics", headers=embedded.as_user("ops", True)).text)
    labels = [lab for lab, _ in got["sagan_http_requests_total"]]
    assert not any("abc123" in lab["route"] for lab in labels), labels
    assert any(lab["route"] == "unmatched" and lab["status"] == "404" for lab in labels), labels


CHILD = """
import sys
from store.telemetry import HTTP_REQUESTS, OUTAGE_RETRIES
HTTP_REQUESTS.labels("GET", "/jobs", "200").inc(int(sys.argv[1]))
OUTAGE_RETRIES.labels("database").inc()
"""
SCRAPE = """
from prometheus_client import generate_latest
from store.telemetry import scrape_registry
print(generate_latest(scrape_registry()).decode())
"""


def test_multiprocess_mode_adds_up_every_process(tmp_path: Path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in (3, 4):  # two API processes, each with its own counts
        subprocess.run([sys.executable, "-c", CHILD, str(n)], env=env, check=True, timeout=60)
    out = subprocess.run(
        [sys.executable, "-c", SCRAPE], env=env, check=True, timeout=60, capture_output=True
    ).stdout.decode()
    got = samples(out)
    [(labels, total)] = got["sagan_http_requests_total"]
    assert labels == {"method": "GET", "route": "/jobs", "status": "200"} and total == 7
    assert got["sagan_outage_retries_total"] == [({"service": "database"}, 2.0)]
