"""A few training steps through the worker's entry point (worker.tasks.train_job), as a GPU
worker of the distributed deployment runs them, on embedded backends (SQLite, local storage):
the fast path compiles there, or says in the job's events why it runs uncompiled (#26).

    python scripts/gpu_worker_step.py            # DEVICE=cuda STEPS=3 PATH_NAME=fast
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("SAGAN_DATA_DIR", tempfile.mkdtemp(prefix="sagan-gpu-worker-"))
    from store import jobs
    from store.db import session_scope
    from store.migrate import upgrade
    from store.models import JobEvent
    from store.settings import get_settings
    from worker.tasks import train_job

    settings = get_settings()
    upgrade(settings.resolved_database_url())
    config = {
        "dataset": "digits", "resolution": 32, "preset": "tiny",
        "steps": int(os.environ.get("STEPS", 3)), "log_every": 1, "checkpoint_every": 0,
        "sample_every": 0, "variety_every": 0,
        "device": os.environ.get("DEVICE", "cuda"), "path": os.environ.get("PATH_NAME", "fast"),
    }  # fmt: skip
    with session_scope(settings) as session:
        job, _ = jobs.create_job(
            session, owner="gpu-check", kind="train", config=config, total_steps=config["steps"]
        )
        job_id = job.id
    started = time.perf_counter()
    state = train_job(job_id, settings)
    seconds = time.perf_counter() - started
    with session_scope(settings) as session:
        row = jobs.get_job(session, job_id)
        events = [
            e.message or f"{e.from_state} -> {e.to_state}"
            for e in session.query(JobEvent).filter(JobEvent.job_id == job_id)
        ]
        print(json.dumps({"state": state, "step": row.step, "error": row.error,
                          "images_per_s": row.images_per_s, "seconds": round(seconds, 1),
                          "events": events}, indent=1))  # fmt: skip
    return 0 if state == "succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
