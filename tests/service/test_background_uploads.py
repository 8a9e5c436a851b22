"""Checkpoints upload while training goes on (issue #24): the real JobCallbacks on SQLite and
the real local storage, whose uploads a test holds back (a slow network) or fails (an outage)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from store import jobs, reset_caches
from store.checkpoints import checkpoint_key, job_models
from store.db import session_scope
from store.migrate import upgrade
from store.models import Checkpoint, JobEvent
from store.outages import ServiceUnavailable, is_outage
from store.settings import Settings, get_settings
from store.storage import LocalStorage
from worker import job_life
from worker.callbacks import JobCallbacks
from worker.liveness import JobLiveness
from worker.tasks import train_job

WORKER = "test-worker"
HELD_S = 0.3  # long enough for an upload that was not held back to have finished


class HeldStorage(LocalStorage):
    """The real local storage; a checkpoint upload waits while `gate` is shut, and fails as an
    outage (the network is down) while `down` is set."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.gate = threading.Event()
        self.gate.set()
        self.down = False
        self.started: list[str] = []

    def put_file(self, key: str, path: Path) -> int:
        self.started.append(key)
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        if self.down:
            raise ConnectionRefusedError("storage unreachable")
        return super().put_file(key, path)


@pytest.fixture
def settings(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SAGAN_OUTAGE_RETRY_SECONDS", "0.5")  # an outage outlasts it at once
    reset_caches()
    upgrade(get_settings().resolved_database_url())
    return get_settings()


def running_job(settings: Settings) -> str:
    with session_scope(settings) as session:
        job, _ = jobs.create_job(
            session, owner="alice", kind="train", config={"steps": 10}, total_steps=10
        )
    assert job_life.claim(settings, job.id, WORKER, "train") is not None
    return job.id


def job_callbacks(settings: Settings, storage: HeldStorage) -> JobCallbacks:
    job_id = running_job(settings)
    # Not entered: no heartbeat thread, and the job stays ours (running, owned by WORKER).
    liveness = JobLiveness(settings, job_id, WORKER)
    return JobCallbacks(
        job_id, WORKER, settings, storage, liveness, resolution=32, class_names=["a", "b"]
    )


def checkpoint_file(tmp_path: Path, step: int) -> Path:
    path = tmp_path / "run" / f"step-{step}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(step.to_bytes(4, "little") * 1024)
    return path


def registered_steps(settings: Settings, job_id: str) -> list[int]:
    """The steps with a checkpoint row (ids are random: the order they came in is the events')."""
    with session_scope(settings) as session:
        rows = session.execute(
            select(Checkpoint.step).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
        )
        return list(rows.scalars())


def latest_step(settings: Settings, job_id: str) -> int | None:
    with session_scope(settings) as session:
        latest = job_models(session, job_id).get("latest")
        return latest.step if latest is not None else None


def in_a_thread(fn) -> tuple[threading.Thread, list[BaseException]]:  # noqa: ANN001
    """fn() on a thread of its own, standing for the training thread that may block in it."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


@pytest.fixture
def storage(settings: Settings) -> HeldStorage:
    return HeldStorage(settings.resolved_storage_dir())


def test_training_goes_on_during_the_upload_and_drain_waits_for_the_registration(
    settings: Settings, storage: HeldStorage, tmp_path: Path
) -> None:
    callbacks = job_callbacks(settings, storage)
    bytes_before = REGISTRY.get_sample_value("sagan_checkpoint_upload_bytes_total") or 0.0
    uploads_before = REGISTRY.get_sample_value("sagan_checkpoint_upload_seconds_count") or 0.0
    path = checkpoint_file(tmp_path, 10)
    storage.gate.clear()

    callbacks.on_checkpoint(10, path, {"latest"})  # returns with the upload held back

    assert callbacks.uploads.busy()
    assert storage.started == [checkpoint_key(callbacks.job_id, 10)]
    assert registered_steps(settings, callbacks.job_id) == []
    assert callbacks.last_checkpoint_step is None  # only a registered step counts
    storage.gate.set()
    callbacks.drain()
    assert registered_steps(settings, callbacks.job_id) == [10]
    assert latest_step(settings, callbacks.job_id) == 10
    assert callbacks.last_checkpoint_step == 10
    assert storage.exists(checkpoint_key(callbacks.job_id, 10))
    assert REGISTRY.get_sample_value("sagan_checkpoint_upload_bytes_total") == pytest.approx(
        bytes_before + path.stat().st_size
    )
    assert REGISTRY.get_sample_value("sagan_checkpoint_upload_seconds_count") == uploads_before + 1


def test_the_next_checkpoint_waits_for_the_previous_upload_and_both_register_in_order(
    settings: Settings, storage: HeldStorage, tmp_path: Path
) -> None:
    callbacks = job_callbacks(settings, storage)
    storage.gate.clear()
    callbacks.on_checkpoint(1, checkpoint_file(tmp_path, 1), {"latest"})

    second, errors = in_a_thread(
        lambda: callbacks.on_checkpoint(2, checkpoint_file(tmp_path, 2), {"latest", "best"})
    )
    second.join(timeout=HELD_S)
    assert second.is_alive()  # the training thread waits: one upload in flight at most
    assert storage.started == [checkpoint_key(callbacks.job_id, 1)]
    storage.gate.set()
    second.join(timeout=30)
    assert not second.is_alive() and errors == []
    (tmp_path / "run" / "step-1.pt").unlink()  # what the trainer does now: step 1 is stored
    callbacks.drain()

    assert registered_steps(settings, callbacks.job_id) == [1, 2]
    assert latest_step(settings, callbacks.job_id) == 2
    with session_scope(settings) as session:
        events = session.execute(
            select(JobEvent.message)
            .where(JobEvent.job_id == callbacks.job_id, JobEvent.kind == "checkpoint")
            .order_by(JobEvent.id)
        )
        assert [m.split(" [")[0] for m in events.scalars()] == ["step 1", "step 2"]


@pytest.mark.parametrize("surfaces_at", ["drain", "next checkpoint"])
def test_an_upload_outage_surfaces_in_the_training_thread_and_the_previous_checkpoint_stays(
    settings: Settings, storage: HeldStorage, tmp_path: Path, surfaces_at: str
) -> None:
    callbacks = job_callbacks(settings, storage)
    callbacks.on_checkpoint(1, checkpoint_file(tmp_path, 1), {"latest"})
    callbacks.drain()
    storage.down = True

    callbacks.on_checkpoint(2, checkpoint_file(tmp_path, 2), {"latest"})  # returns: no error yet
    with pytest.raises(ServiceUnavailable) as raised:
        if surfaces_at == "drain":
            callbacks.drain()
        else:
            callbacks.on_checkpoint(3, checkpoint_file(tmp_path, 3), {"latest"})

    assert is_outage(raised.value) and "upload of checkpoint 2" in str(raised.value)
    assert checkpoint_key(callbacks.job_id, 3) not in storage.started  # never started
    assert registered_steps(settings, callbacks.job_id) == [1]
    assert latest_step(settings, callbacks.job_id) == 1
    assert callbacks.last_checkpoint_step == 1  # what the job's release reason names
    assert callbacks.drain() is None  # raised once; the job is released for it once


def test_background_uploads_off_the_training_thread_waits_for_the_registration(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGAN_BACKGROUND_UPLOADS", "false")
    reset_caches()
    settings = get_settings()
    storage = HeldStorage(settings.resolved_storage_dir())
    callbacks = job_callbacks(settings, storage)
    storage.gate.clear()

    first, errors = in_a_thread(
        lambda: callbacks.on_checkpoint(1, checkpoint_file(tmp_path, 1), {"latest"})
    )
    first.join(timeout=HELD_S)
    assert first.is_alive()  # the plain path: the loop waits for the upload itself
    storage.gate.set()
    first.join(timeout=30)

    assert errors == [] and callbacks.uploads.thread is None
    assert registered_steps(settings, callbacks.job_id) == [1]  # at once, no drain
    assert callbacks.last_checkpoint_step == 1
    storage.down = True
    with pytest.raises(ServiceUnavailable):  # and an outage stops the loop where it happens
        callbacks.on_checkpoint(2, checkpoint_file(tmp_path, 2), {"latest"})


def test_an_outage_in_the_last_upload_releases_a_finished_run_and_removes_its_run_dir(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run trains to its end; its only checkpoint (the final one) cannot be stored: the drain
    after the run finds the outage, and the job goes back to the queue as for any outage."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SAGAN_WORKER_DEVICE", "cpu")
    monkeypatch.setenv("SAGAN_STORAGE", "s3")  # an S3 endpoint where nothing listens
    monkeypatch.setenv("SAGAN_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    reset_caches()
    settings = get_settings()
    config = {"dataset": "digits", "resolution": 32, "preset": "tiny", "batch_size": 4}
    config |= {"steps": 2, "log_every": 1, "sample_every": 0, "checkpoint_every": 0}
    with session_scope(settings) as session:
        job, _ = jobs.create_job(session, owner="alice", kind="train", config=config, total_steps=2)

    assert train_job(job.id, settings) == jobs.QUEUED

    with session_scope(settings) as session:
        released = session.execute(
            select(JobEvent.message).where(
                JobEvent.job_id == job.id,
                JobEvent.from_state == "running",
                JobEvent.to_state == "queued",
            )
        ).scalar_one()
    assert "outage" in released and "upload of checkpoint 2" in released, released
    assert "resumes from step 0" in released
    assert registered_steps(settings, job.id) == []
    assert list((settings.data_dir / "runs").glob("*")) == []  # after the upload ended
