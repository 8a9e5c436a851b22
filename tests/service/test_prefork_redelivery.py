"""A prefork worker (`sagan worker -c 2`) whose child dies under a job: Celery redelivers the task
to the other child, which takes the job over at once, since its owner is a dead process of this
machine (#24: the redelivery was dropped, the job's heartbeat being fresh, and the job waited out
the 60 s stale window for the reaper)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
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


def test_a_dead_prefork_childs_job_is_taken_over_by_the_redelivery_at_once(
    distributed_env: dict[str, str], tmp_path: Path
) -> None:
    env = service_env(**distributed_env, SAGAN_REAP_EVERY_SECONDS="0")  # no reaper: the claim
    del env["SAGAN_HEARTBEAT_SECONDS"]  # the defaults: heartbeat 10 s, stale 60 s
    config = {**TINY_TRAIN, "steps": 40, "log_every": 1, "checkpoint_every": 5, "variety_every": 0}
    port = free_port()
    with (
        ProcessGroup(tmp_path) as group,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=AUTH) as client,
    ):
        api = group.start(["api", "--port", str(port), "--reap-every", "0"], env, "api")
        worker = group.start(["worker", "--concurrency", "2"], env, "worker")
        wait_healthy(str(client.base_url), api)
        worker.wait_for(r"ready\.", 90)
        job_id = client.post("/jobs", json={"kind": "train", "config": config}).json()["id"]
        job = wait_until(
            lambda: (j := client.get(f"/jobs/{job_id}").json())["latest_model_id"] and j,
            120, "checkpointed", api, worker, poll=0.1,
        )  # fmt: skip
        child = int(job["worker"].rsplit(":", 1)[1])
        assert child != worker.proc.pid  # a prefork child ran it
        os.kill(child, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(
            lambda: (j := client.get(f"/jobs/{job_id}").json())["state"] == "running"
            and j["attempts"] == 2,
            45, "running again", api, worker,
        )  # fmt: skip
        elapsed = time.monotonic() - killed_at
        print(f"\njob {job_id} taken over {elapsed:.1f} s after its prefork child died")
        assert elapsed < 45  # well inside the 60 s stale window, with no reaper running
        done = wait_job(client, job_id, ("succeeded", "failed", "cancelled"), 240, api, worker)
        assert done["state"] == "succeeded", done
        events = client.get(f"/jobs/{job_id}/events").json()
        assert any(e["kind"] == "worker_lost" and f":{child} died" in e["message"] for e in events)
