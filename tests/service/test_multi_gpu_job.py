"""A job of two processes (issue #15) through the service: real `sagan api` and `sagan worker`
over PostgreSQL, Redis and S3, the worker serving two CPU "GPUs" (gloo). Rank 0 (the worker's
task) writes the one metric series and the checkpoints; rank 1, killed with SIGKILL, stops the
run, the job goes back to the queue as a lost worker and resumes from its last checkpoint."""

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

ENDED = ("succeeded", "failed", "cancelled")


def rank_pid(data_dir: Path, job_id: str, rank: int) -> int | None:
    """The pid of a rank of the job's current run (sagan_core.launch writes it)."""
    found = sorted((data_dir / "runs").glob(f"job-{job_id}-*/run/rank-{rank}.pid"))
    return int(found[-1].read_text()) if found else None


def test_two_process_job_succeeds_with_one_series_and_resumes_after_a_rank_is_killed(
    distributed_env: dict[str, str], tmp_path: Path
) -> None:
    env = service_env(**distributed_env, SAGAN_WORKER_GPUS="2", SAGAN_GPU_POOLS="1,2")
    env["OMP_NUM_THREADS"] = "1"
    data_dir = Path(distributed_env["SAGAN_DATA_DIR"])
    config = {**TINY_TRAIN, "gpus": 2, "steps": 40, "log_every": 1, "checkpoint_every": 10}
    port = free_port()
    with (
        ProcessGroup(tmp_path) as group,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=AUTH) as client,
    ):
        api = group.start(["api", "--port", str(port)], env, "api")
        worker = group.start(["worker"], env, "worker")
        wait_healthy(str(client.base_url), api)
        worker.wait_for(r"ready\.", 60)
        assert "train.gpus2" in worker.output()  # it consumes the queue of 2-GPU jobs
        r = client.post("/jobs", json={"kind": "train", "config": config})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        wait_until(
            lambda: client.get(f"/jobs/{job_id}").json()["latest_model_id"],
            180, "first checkpoint", api, worker, poll=0.1,
        )  # fmt: skip
        pid = rank_pid(data_dir, job_id, 1)
        assert pid is not None and pid != worker.proc.pid
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()

        done = wait_job(client, job_id, ENDED, 300, api, worker)
        assert done["state"] == "succeeded", (done, worker.output()[-3000:])
        assert done["attempts"] == 2
        assert worker.alive()  # rank 0 (the worker) outlived its rank 1 and ran the job again
        events = client.get(f"/jobs/{job_id}/events").json()
        [lost] = [e for e in events if e["kind"] == "worker_lost"]
        assert "rank 1 of the run was lost (killed by signal 9)" in lost["message"], lost
        requeued = next(e for e in events if e["to_state"] == "queued" and e["from_state"])
        print(f"\nrank 1 killed; job requeued by rank 0: {requeued['message']}")
        assert time.monotonic() - killed_at < 240
        series = client.get(
            f"/jobs/{job_id}/metrics", params={"names": "d_loss,images_per_s", "max_points": 1000}
        ).json()["series"]
        assert [s for s, _ in series["d_loss"]] == list(range(1, 41))  # one series, no repeat
        assert all(v > 0 for _, v in series["images_per_s"])
        assert rank_pid(data_dir, job_id, 1) is None  # the run directories are cleaned up
