"""`sagan up` says where to go once the API listens, then a line of progress per running job."""

from __future__ import annotations

import re

import httpx
from servicekit import TINY_TRAIN, ProcessGroup, free_port, service_env, wait_healthy, wait_job


def test_up_prints_where_to_go_then_progress_lines_of_running_jobs(tmp_path) -> None:
    data = tmp_path / "data"
    port = free_port()
    # The job's progress reaches the database with its heartbeat; beat often, and train long
    # enough (60 tiny steps) that lines are printed while it runs: 16 steps once ended between
    # two beats on a quiet machine, and no line had a step.
    env = service_env(SAGAN_UP_PROGRESS_SECONDS="0.5", SAGAN_HEARTBEAT_SECONDS="0.2")
    env.pop("SAGAN_ADMIN_TOKEN")  # the first start makes the token and keeps it in data/token
    with ProcessGroup(tmp_path) as group:
        up = group.start(["up", "--port", str(port), "--data-dir", str(data)], env, "up")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, up)
        up.wait_for(r"SAGAN is up:", 30)
        token_file = data / "token"
        out = up.output()
        assert re.search(rf"dashboard\s+{re.escape(url)}/\n", out), out
        assert re.search(rf"API docs\s+{re.escape(url)}/docs", out), out
        assert re.search(rf"token\s+{re.escape(str(token_file))} ", out), out
        assert re.search(rf"SAGAN_URL={re.escape(url)} \S*sagan jobs list", out), out
        assert '"GET /healthz' not in out  # no access log by default (--access-log turns it on)
        # The banner comes after uvicorn says it listens; no job runs, so no progress lines yet.
        assert out.index("Uvicorn running") < out.index("SAGAN is up:")
        assert not re.search(r"\] job [0-9a-f]{8} ", out)

        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            config = {**TINY_TRAIN, "steps": 60, "log_every": 2, "checkpoint_every": 30}
            r = client.post("/jobs", json={"kind": "train", "config": config})
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            line = up.wait_for(
                rf"\] job {job_id[:8]} running  train step (\d+)/60 \(\d+%\)  d_loss [-\d.]+  "
                rf"g_loss [-\d.]+  .*img/s  ETA \S+\n",
                120,
            )
            assert 0 < int(line.group(1)) <= 60
            wait_job(client, job_id, ("succeeded",), 420, up)  # 180 s missed on a loaded machine
        lines = re.findall(rf"\] job {job_id[:8]} \w+  train step (\d+)/60", up.output())
        steps = [int(s) for s in lines]
        assert steps == sorted(steps), steps  # the same job, moving on
