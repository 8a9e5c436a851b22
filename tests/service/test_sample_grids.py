"""The periodic sample grids of a training job are kept with the job and served by the API."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from store import jobs
from store.db import session_scope
from store.migrate import upgrade
from store.settings import get_settings
from store.tokens import create_token
from worker.tasks import train_job


@pytest.fixture
def service(embedded_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SAGAN_WORKER_DEVICE", "cpu")
    settings = get_settings()
    upgrade(settings.resolved_database_url())
    with session_scope(settings) as session:
        alice, bob = create_token(session, "alice")[1], create_token(session, "bob")[1]
    app = create_app(settings)
    yield (
        TestClient(app, headers={"Authorization": f"Bearer {alice}"}),
        TestClient(app, headers={"Authorization": f"Bearer {bob}"}),
        embedded_env,
    )


def test_grids_rendered_during_training_are_listed_and_served_after_the_job_ends(service):
    alice, bob, data_dir = service
    config = {
        "dataset": "digits", "resolution": 32, "preset": "tiny", "batch_size": 4, "steps": 4,
        "log_every": 2, "checkpoint_every": 0, "sample_every": 2,
    }  # fmt: skip
    job_id = alice.post("/jobs", json={"kind": "train", "config": config}).json()["id"]
    assert train_job(job_id, get_settings()) == jobs.SUCCEEDED
    assert not list((data_dir / "runs").glob("*"))  # the worker's run directory is gone

    listed = alice.get(f"/jobs/{job_id}/samples")
    assert listed.status_code == 200, listed.text
    assert [(g["step"], g["url"]) for g in listed.json()["items"]] == [
        (2, f"/jobs/{job_id}/samples/2"), (4, f"/jobs/{job_id}/samples/4"),
    ]  # fmt: skip
    grid = alice.get(f"/jobs/{job_id}/samples/4")
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    width, height = Image.open(io.BytesIO(grid.content)).size  # 10 classes x 8, gaps, labels
    assert height == 10 * 32 + 9 * 2 and width > 8 * 32 + 7 * 2  # a margin for the class names
    assert grid.content != alice.get(f"/jobs/{job_id}/samples/2").content
    again = alice.get(f"/jobs/{job_id}/samples/4", headers={"If-None-Match": grid.headers["etag"]})
    assert again.status_code == 304

    assert alice.get(f"/jobs/{job_id}/samples/3").status_code == 404
    assert bob.get(f"/jobs/{job_id}/samples").status_code == 404
    assert bob.get(f"/jobs/{job_id}/samples/4").status_code == 404
