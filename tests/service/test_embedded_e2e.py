"""`sagan up`: one command runs the API and a worker over SQLite, local storage, a file broker."""

from __future__ import annotations

import io
import re
import signal
import time
from pathlib import Path

import httpx
from PIL import Image
from servicekit import (
    TINY_TRAIN,
    ProcessGroup,
    free_port,
    pid_alive,
    service_env,
    wait_healthy,
    wait_job,
)


def test_up_trains_a_job_serves_metrics_and_samples_then_stops_on_ctrl_c(tmp_path: Path) -> None:
    with ProcessGroup(tmp_path) as group:
        run_embedded(group, tmp_path)


def run_embedded(group: ProcessGroup, tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = service_env()
    del env["SAGAN_ADMIN_TOKEN"]  # as a newcomer runs it: the first start makes a token
    up = group.start(["up", "--port", str(port), "--data-dir", str(data)], env, "up")
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, up)
    worker_pid = int(up.wait_for(r"worker pid (\d+)", 10).group(1))
    token = up.wait_for(r"\n    (sgn_\S+)\n", 10).group(1)  # shown once, at the first start
    assert (data / "token").read_text().strip() == token
    assert (data / "token").stat().st_mode & 0o077 == 0  # readable by its owner only
    assert httpx.get(f"{base}/jobs", timeout=10).status_code == 401

    with httpx.Client(
        base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        r = client.post("/jobs", json={"kind": "train", "config": TINY_TRAIN})
        assert r.status_code == 201, r.text
        assert r.json()["state"] == "queued"
        job_id = r.json()["id"]

        job = wait_job(client, job_id, ("succeeded", "failed", "cancelled"), 150, up)
        assert job["state"] == "succeeded", job
        assert (job["step"], job["total_steps"], job["error"]) == (6, 6, None)

        series = client.get(f"/jobs/{job_id}/metrics").json()["series"]
        assert [s for s, _ in series["d_loss"]] == [2, 4, 6]
        assert [s for s, _ in series["g_loss"]] == [2, 4, 6]

        url = f"/models/{job['latest_model_id']}/samples"
        first = client.get(url, params={"class": 3, "n": 4, "seed": 7})
        assert first.status_code == 200, first.text
        assert first.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(first.content)).size == (66, 66)  # 2 x 2 of 32 px, a gap
        again = client.get(url, params={"class": 3, "n": 4, "seed": 7})
        assert again.content == first.content

    assert (data / "sagan.db").is_file()
    assert list((data / "storage" / "jobs" / job_id / "checkpoints").glob("*.pt"))

    assert up.stop(signal.SIGINT, timeout=60) == 0, up.output()
    deadline = time.monotonic() + 10
    while pid_alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(worker_pid), "the worker outlived `sagan up`"
    assert re.search(r"worker exited with code 0", up.output()), up.output()
