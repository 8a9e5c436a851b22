"""Stopping running jobs: a user's cancel, and `sagan up` shutting down under a running job."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
from servicekit import (
    AUTH,
    TINY_TRAIN,
    ProcessGroup,
    ServiceProcess,
    free_port,
    service_env,
    wait_healthy,
    wait_job,
)

ENDLESS = {**TINY_TRAIN, "steps": 100_000, "log_every": 1, "checkpoint_every": 0}


def start_up(group: ProcessGroup, data: Path, name: str) -> tuple[ServiceProcess, str]:
    port = free_port()
    up = group.start(["up", "--port", str(port), "--data-dir", str(data)], service_env(), name)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, up)
    return up, base


def wait_step(client: httpx.Client, job_id: str, step: int, timeout: float, up) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] == "running" and job["step"] >= step:
            return job
        assert job["state"] in ("queued", "running"), job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not reach step {step}:\n{up.output()}")


def test_cancelled_running_job_ends_cancelled_with_checkpoint_and_model(tmp_path: Path) -> None:
    with ProcessGroup(tmp_path) as group:
        up, base = start_up(group, tmp_path / "data", "up")
        with httpx.Client(base_url=base, timeout=30, headers=AUTH) as client:
            job_id = client.post("/jobs", json={"kind": "train", "config": ENDLESS}).json()["id"]
            wait_step(client, job_id, 2, 120, up)

            r = client.post(f"/jobs/{job_id}/cancel")
            assert r.status_code == 200, r.text
            assert r.json()["state"] in ("cancelling", "cancelled")

            job = wait_job(client, job_id, ("cancelled", "failed", "succeeded"), 60, up)
            assert job["state"] == "cancelled", job
            assert 2 <= job["step"] < 100_000
            model = client.get(f"/models/{job['latest_model_id']}").json()
            assert model["step"] == job["step"]  # the checkpoint saved when it stopped
            png = client.get(f"/models/{model['id']}/samples", params={"class": 1, "n": 1})
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_shutdown_requeues_running_job_and_next_start_resumes_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ProcessGroup(tmp_path) as group:
        up, base = start_up(group, data, "up-1")
        with httpx.Client(base_url=base, timeout=30, headers=AUTH) as client:
            job_id = client.post("/jobs", json={"kind": "train", "config": ENDLESS}).json()["id"]
            wait_step(client, job_id, 2, 120, up)
        assert up.stop(signal.SIGTERM, timeout=60) == 0, up.output()

        up, base = start_up(group, data, "up-2")
        with httpx.Client(base_url=base, timeout=30, headers=AUTH) as client:
            stopped = client.get(f"/jobs/{job_id}").json()
            assert stopped["state"] in ("queued", "running"), stopped
            assert client.get(f"/models/{stopped['latest_model_id']}").json()["step"] >= 2
            job = wait_step(client, job_id, stopped["step"] + 1, 120, up)
            assert job["attempts"] == 2
            client.post(f"/jobs/{job_id}/cancel")
            job = wait_job(client, job_id, ("cancelled", "failed", "succeeded"), 60, up)
            assert job["state"] == "cancelled", job
            d_loss = client.get(f"/jobs/{job_id}/metrics", params={"names": "d_loss"}).json()
            steps = [s for s, _ in d_loss["series"]["d_loss"]]
            assert steps == list(range(1, job["step"] + 1))  # resumed: no gap, no repeat
