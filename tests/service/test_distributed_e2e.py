"""The distributed processes: `sagan api` and `sagan worker` on PostgreSQL, Redis and S3."""

from __future__ import annotations

from pathlib import Path

import boto3
import httpx
from servicekit import (
    AUTH,
    TINY_TRAIN,
    ProcessGroup,
    free_port,
    service_env,
    wait_healthy,
    wait_job,
)
from sqlalchemy import create_engine, text


def test_api_and_worker_processes_train_into_postgres_and_s3(
    distributed_env: dict[str, str], tmp_path: Path
) -> None:
    env = service_env(**distributed_env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with ProcessGroup(tmp_path) as group:
        api = group.start(["api", "--port", str(port)], env, "api")
        worker = group.start(["worker", "--concurrency", "1"], env, "worker")
        wait_healthy(base, api)
        worker.wait_for(r"ready\.", 60)

        with httpx.Client(base_url=base, timeout=30, headers=AUTH) as client:
            r = client.post("/jobs", json={"kind": "train", "config": TINY_TRAIN})
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            job = wait_job(client, job_id, ("succeeded", "failed", "cancelled"), 150, api, worker)
            assert job["state"] == "succeeded", job

    s3 = boto3.client("s3", endpoint_url=distributed_env["SAGAN_S3_ENDPOINT_URL"])
    listing = s3.list_objects_v2(Bucket=distributed_env["SAGAN_S3_BUCKET"], Prefix="jobs/")
    keys = sorted(o["Key"] for o in listing.get("Contents", []))
    assert keys == [
        f"jobs/{job_id}/checkpoints/step-00000003.pt",
        f"jobs/{job_id}/checkpoints/step-00000006.pt",
    ]

    engine = create_engine(distributed_env["SAGAN_DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name, step FROM metrics WHERE job_id = :j AND name = 'd_loss'"),
            {"j": job_id},
        ).all()
        worker_name = conn.execute(
            text("SELECT worker FROM jobs WHERE id = :j"), {"j": job_id}
        ).scalar_one()
    engine.dispose()
    assert sorted(step for _, step in rows) == [2, 4, 6]
    assert worker_name.endswith(f":{worker.proc.pid}")  # `sagan worker` ran it, in its own process
