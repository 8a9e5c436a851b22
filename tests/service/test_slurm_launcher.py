"""The slurm launcher end to end (issue #25): a real Slurm of the test's own (slurmctld and two
slurmd nodes, tests/service/slurmkit.py), real `sagan api` and `sagan worker` over PostgreSQL,
Redis and moto S3. A `nodes: 2` job becomes one allocation of two nodes, each a torchrun agent of
one CPU rank; rank 0 writes the metrics and checkpoints, the claiming worker settles the job."""

from __future__ import annotations

import os
import re
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servicekit import (
    AUTH,
    TINY_TRAIN,
    ProcessGroup,
    ServiceProcess,
    free_port,
    service_env,
    wait_healthy,
    wait_job,
    wait_until,
)
from slurmkit import SlurmCluster

ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture
def slurm() -> Iterator[SlurmCluster]:
    root = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))  # munge's socket path is short
    cluster = SlurmCluster(root)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def allocation_of(worker: ServiceProcess, job_id: str, timeout: float = 120) -> str:
    m = worker.wait_for(rf"job {job_id}: Slurm allocation (\d+) submitted", timeout)
    return m.group(1)


def slurm_job(slurm: SlurmCluster, allocation: str) -> dict[str, str]:
    shown = slurm.run("scontrol", "show", "job", allocation, "--oneliner").stdout
    return dict(f.split("=", 1) for f in shown.split() if "=" in f)


def start_service(group: ProcessGroup, env: dict[str, str], client: httpx.Client):  # noqa: ANN201
    api = group.start(["api", "--port", str(client.base_url.port)], env, "api")
    worker = group.start(["worker"], env, "worker")
    wait_healthy(str(client.base_url), api)
    worker.wait_for(r"ready\.", 60)
    return api, worker


def slurm_env(distributed_env: dict, slurm: SlurmCluster, tmp_path: Path, **more: str) -> dict:
    return service_env(
        **distributed_env,
        **slurm.env,
        SAGAN_LAUNCHER="slurm",
        SAGAN_SLURM_POLL_SECONDS="0.5",
        SAGAN_SLURM_RUN_ROOT=str(tmp_path / "shared-runs"),  # every "node" sees it
        **{"SAGAN_SLURM_MAX_RESTARTS": "0", **more},
    )


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])


@pytest.mark.alone  # two nodes' ranks training through three gangs: the machine's two cores
def test_a_two_node_job_survives_a_lost_rank_by_a_gang_restart_and_a_lost_node_by_a_retry(
    distributed_env: dict[str, str], slurm: SlurmCluster, tmp_path: Path
) -> None:
    env = slurm_env(distributed_env, slurm, tmp_path, SAGAN_SLURM_MAX_RESTARTS="1")
    config = {**TINY_TRAIN, "nodes": 2, "steps": 30, "log_every": 1, "checkpoint_every": 10}
    with (
        ProcessGroup(tmp_path) as group,
        httpx.Client(base_url=f"http://127.0.0.1:{free_port()}", timeout=30, headers=AUTH) as c,
    ):
        api, worker = start_service(group, env, c)
        r = c.post("/jobs", json={"kind": "train", "config": config})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        first = allocation_of(worker, job_id)
        work = tmp_path / "shared-runs" / f"job-{job_id}"
        wait_until(
            lambda: c.get(f"/jobs/{job_id}").json()["latest_model_id"],
            240, "first checkpoint", api, worker, poll=0.2,
        )  # fmt: skip
        placed = slurm_job(slurm, first)
        assert placed["NumNodes"] == "2" and placed["NodeList"] == "n[1-2]", placed
        assert placed["JobState"] == "RUNNING", placed

        # A lost rank: torchrun restarts the gang in the same allocation, from the newest
        # checkpoint in the shared run directory; the job is not lost.
        killed = int((work / "rank-1.pid").read_text())  # rank 1: the other node's process
        os.kill(killed, signal.SIGKILL)

        def restarted() -> int | None:
            pid = int((work / "rank-1.pid").read_text())
            return pid if pid != killed and c.get(f"/jobs/{job_id}").json()["step"] > 12 else None

        rank1 = wait_until(restarted, 240, "the restarted gang past step 12", api, worker)
        assert slurm_job(slurm, first)["JobState"] == "RUNNING"
        assert c.get(f"/jobs/{job_id}").json()["attempts"] == 1

        # A lost node (its torchrun agent and rank): the allocation fails, and the job is a lost
        # worker, requeued and run again in a new allocation from its last registered checkpoint.
        agent = parent_of(rank1)
        for pid in (rank1, agent):
            os.kill(pid, signal.SIGKILL)
        done = wait_job(c, job_id, ENDED, 400, api, worker)
        assert done["state"] == "succeeded", (done, worker.output()[-4000:])
        assert done["attempts"] == 2
        allocations = re.findall(
            rf"job {job_id}: Slurm allocation (\d+) submitted", worker.output()
        )
        assert allocations == [first, str(int(first) + 1)], allocations
        assert slurm_job(slurm, first)["JobState"] == "FAILED"
        events = c.get(f"/jobs/{job_id}/events").json()
        [lost] = [e for e in events if e["kind"] == "worker_lost"]
        assert f"Slurm allocation {first} ended FAILED without a result" in lost["message"], lost

        series = c.get(
            f"/jobs/{job_id}/metrics", params={"names": "d_loss", "max_points": 1000}
        ).json()["series"]
        assert [s for s, _ in series["d_loss"]] == list(range(1, 31))  # rank 0's one series
        model = c.get(f"/jobs/{job_id}").json()["latest_model_id"]
        png = c.get(f"/models/{model}/samples", params={"class": 3, "n": 4})
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        assert not work.exists()  # settled: the shared run directory is gone


def test_cancel_and_queue_wait_reach_slurm(
    distributed_env: dict[str, str], slurm: SlurmCluster, tmp_path: Path
) -> None:
    env = slurm_env(distributed_env, slurm, tmp_path, SAGAN_SLURM_QUEUE_WAIT_SECONDS="4")
    blocker = tmp_path / "block.sh"  # both nodes busy: the job's allocation stays pending
    blocker.write_text("#!/bin/bash\nsleep 600\n")
    blocking = slurm.run("sbatch", "--parsable", "--nodes=2", "--output=/dev/null", str(blocker))
    config = {**TINY_TRAIN, "nodes": 2, "steps": 100_000}
    with (
        ProcessGroup(tmp_path) as group,
        httpx.Client(base_url=f"http://127.0.0.1:{free_port()}", timeout=30, headers=AUTH) as c,
    ):
        api, worker = start_service(group, env, c)
        job_id = c.post("/jobs", json={"kind": "train", "config": config}).json()["id"]
        first = allocation_of(worker, job_id)
        # Pending past the wait: cancelled in Slurm, the job handed back and claimed again.
        second = worker.wait_for(
            rf"job {job_id}: Slurm allocation (?!{first}\b)(\d+) submitted", 120
        ).group(1)
        assert slurm_job(slurm, first)["JobState"] == "CANCELLED"
        events = c.get(f"/jobs/{job_id}/events").json()
        assert any(
            f"Slurm allocation {first} did not start within 4 s" in (e["message"] or "")
            for e in events
        ), events
        assert not any(e["kind"] == "worker_lost" for e in events)  # no attempt lost

        slurm.run("scancel", blocking.stdout.strip())  # it runs now; a cancel reaches every node

        def running() -> bool:
            started = slurm_job(slurm, second).get("JobState") == "RUNNING"
            return started and bool(c.get(f"/jobs/{job_id}").json()["step"])

        wait_until(running, 240, "running", api, worker)
        # Slurm's warning before the time limit (--signal B:USR1@N) as scancel sends it: rank 0
        # checkpoints, the job goes back to the queue (no loss) and runs on in a new allocation.
        slurm.run("scancel", "--batch", "--signal=USR1", second)
        third = worker.wait_for(
            rf"job {job_id}: Slurm allocation (?!{first}\b|{second}\b)(\d+) submitted", 180
        ).group(1)
        assert slurm_job(slurm, second)["JobState"] == "COMPLETED"
        events = c.get(f"/jobs/{job_id}/events").json()
        [handed_back] = [e for e in events if "nears its time limit" in (e["message"] or "")]
        assert handed_back["to_state"] == "queued", handed_back
        assert not any(e["kind"] == "worker_lost" for e in events)
        second = third
        wait_until(running, 240, "running again", api, worker)
        assert c.post(f"/jobs/{job_id}/cancel").status_code in (200, 202)
        done = wait_job(c, job_id, ENDED, 180, api, worker)
        assert done["state"] == "cancelled", done
        wait_until(
            lambda: slurm_job(slurm, second).get("JobState") in ("COMPLETED", "CANCELLED"),
            60, "allocation ended", api, worker,
        )  # fmt: skip
        for node in ("n1", "n2"):  # no rank left behind on either node
            steps = slurm.run("squeue", "--noheader", f"--nodelist={node}").stdout.strip()
            assert steps == "", steps
