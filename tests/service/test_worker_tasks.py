"""The worker's task functions, in-process against SQLite and local storage (no broker consumer)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
from sqlalchemy import select, update

from store import jobs, reset_caches
from store.checkpoints import checkpoint_key, job_models, newest_checkpoint, register_checkpoint
from store.db import session_scope
from store.metrics import read_metrics
from store.migrate import upgrade
from store.models import Checkpoint, Job, utcnow
from store.settings import get_settings
from store.storage import storage_from_settings
from worker.evaluation import local_inception_weights
from worker.reaper import reap_stale
from worker.tasks import evaluate_job, train_job

TINY = {
    "dataset": "digits",
    "resolution": 32,
    "preset": "tiny",
    "batch_size": 4,
    "log_every": 1,
    "sample_every": 0,
}


@pytest.fixture
def service(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SAGAN_WORKER_DEVICE", "cpu")
    reset_caches()
    upgrade(get_settings().resolved_database_url())
    return embedded_env


def new_job(config: dict, kind: str = "train", model_id: str | None = None) -> str:
    with session_scope(get_settings()) as session:
        job, _ = jobs.create_job(
            session,
            owner="alice",
            kind=kind,
            config=config,
            total_steps=config.get("steps", 0),
            model_id=model_id,
        )
        return job.id


def use_inception_weights(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SAGAN_INCEPTION_WEIGHTS", value)
    reset_caches()


def job_row(job_id: str) -> Job:
    with session_scope(get_settings()) as session:
        return jobs.get_job(session, job_id)


def run_dirs_left(data_dir: Path) -> list[Path]:
    return list((data_dir / "runs").glob("*")) if (data_dir / "runs").exists() else []


def test_duplicate_delivery_finds_job_owned_and_does_not_run(service: Path) -> None:
    job_id = new_job({**TINY, "steps": 2})
    with session_scope(get_settings()) as session:
        assert jobs.claim_job(session, job_id, "other-host:1")

    assert train_job(job_id, get_settings()) is None

    job = job_row(job_id)
    assert (job.state, job.worker, job.attempts, job.step) == ("running", "other-host:1", 1, 0)
    with session_scope(get_settings()) as session:
        assert newest_checkpoint(session, job_id) is None
        assert read_metrics(session, job_id) == {}


def test_empty_dataset_folder_fails_job_with_reason(service: Path, tmp_path: Path) -> None:
    empty = service / "datasets" / "images"  # inside the default data root (SAGAN_DATA_ROOTS)
    (empty / "cats").mkdir(parents=True)
    job_id = new_job({**TINY, "steps": 2, "dataset": "folder", "data_root": str(empty)})

    assert train_job(job_id, get_settings()) == "failed"

    job = job_row(job_id)
    assert job.state == "failed"
    assert job.error.startswith("dataset error: ")
    assert "0 images" in job.error and str(empty) in job.error
    assert "Traceback" not in job.error
    assert run_dirs_left(service) == []


def test_diverging_run_fails_naming_step_and_keeps_last_good_checkpoint(service: Path) -> None:
    # lr_g = 1e38 leaves step 1 finite (G's update comes after its loss) and blows up step 2.
    job_id = new_job({**TINY, "steps": 6, "checkpoint_every": 1, "lr_g": 1e38})

    assert train_job(job_id, get_settings()) == "failed"

    job = job_row(job_id)
    assert job.error.startswith("diverged: ")
    assert "at step 2" in job.error
    assert job.error.endswith("last good checkpoint step 1")
    with session_scope(get_settings()) as session:
        ckpt = newest_checkpoint(session, job_id)
        models = job_models(session, job_id)
    assert ckpt.step == 1
    assert models["latest"].step == 1 and models["latest"].class_names[3] == "3"
    assert storage_from_settings(get_settings()).exists(ckpt.key)


def test_reaper_requeues_silent_running_job_and_sends_its_task(service: Path) -> None:
    stale, alive = new_job({**TINY, "steps": 2}), new_job({**TINY, "steps": 2})
    with session_scope(get_settings()) as session:
        jobs.claim_job(session, stale, "dead-host:1")
        jobs.claim_job(session, alive, "live-host:1")
        session.execute(
            update(Job).where(Job.id == stale).values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
    queue = service / "broker" / "queue"
    before = set(queue.glob("*")) if queue.exists() else set()

    assert reap_stale(get_settings()) == [stale]

    assert (job_row(stale).state, job_row(stale).worker) == ("queued", None)
    assert job_row(alive).state == "running"
    sent = set(queue.glob("*")) - before
    assert len(sent) == 1 and stale in next(iter(sent)).read_text()


def test_retried_job_resumes_from_its_checkpoint(service: Path) -> None:
    from sagan_core.config import TrainConfig
    from sagan_core.trainer import Trainer

    config = {**TINY, "steps": 4, "checkpoint_every": 2}
    job_id = new_job(config)
    with session_scope(get_settings()) as session:
        jobs.claim_job(session, job_id, "dead-host:1")
    # The first worker got to step 2, stored a checkpoint, then died.
    first = Trainer(TrainConfig.from_dict({**config, "steps": 2}), service / "first").run()
    storage = storage_from_settings(get_settings())
    key = checkpoint_key(job_id, 2)
    size = storage.put_file(key, first.last_checkpoint)
    with session_scope(get_settings()) as session:
        register_checkpoint(
            session,
            jobs.get_job(session, job_id),
            step=2,
            key=key,
            size_bytes=size,
            tags={"latest"},
            resolution=32,
            class_names=[str(i) for i in range(10)],
        )
        session.execute(
            update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
    assert reap_stale(get_settings()) == [job_id]

    assert train_job(job_id, get_settings()) == "succeeded"

    job = job_row(job_id)
    assert (job.state, job.step, job.attempts, job.error) == ("succeeded", 4, 2, None)
    with session_scope(get_settings()) as session:
        series = read_metrics(session, job_id, names=["d_loss"])
        steps = (
            session.execute(
                select(Checkpoint.step).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
            )
            .scalars()
            .all()
        )
        models = job_models(session, job_id)
    assert [s for s, _ in series["d_loss"]] == [3, 4]  # no step was trained twice
    assert steps == [2, 4]
    assert models["latest"].step == 4
    assert run_dirs_left(service) == []


def test_evaluate_job_without_inception_weights_fails_at_once_naming_the_setting(
    service: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = new_job({**TINY, "steps": 2, "checkpoint_every": 2})
    assert train_job(trained, get_settings()) == "succeeded"
    with session_scope(get_settings()) as session:
        model = job_models(session, trained)["latest"]
        model_id, snapshot = model.id, {"checkpoint_key": model.checkpoint_key}
        snapshot["model_step"] = model.step  # as the API snapshots the model into the job
    use_inception_weights(monkeypatch, "models/inception.pth")
    config = {"model_id": model_id, "samples": 64, **snapshot}
    job_id = new_job(config, kind="evaluate", model_id=model_id)

    assert evaluate_job(job_id, get_settings()) == "failed"

    job = job_row(job_id)
    assert job.error.startswith("evaluation failed: ")
    assert "SAGAN_INCEPTION_WEIGHTS='models/inception.pth'" in job.error
    with session_scope(get_settings()) as session:
        assert read_metrics(session, job_id) == {}


def test_train_job_that_evaluates_without_weights_fails_before_training(
    service: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_inception_weights(monkeypatch, str(service / "no-such-weights.pth"))
    job_id = new_job({**TINY, "steps": 4, "eval_every": 2})

    assert train_job(job_id, get_settings()) == "failed"

    job = job_row(job_id)
    assert "SAGAN_INCEPTION_WEIGHTS" in job.error and job.step == 0
    with session_scope(get_settings()) as session:
        assert newest_checkpoint(session, job_id) is None


def test_inception_weights_given_as_storage_key_are_fetched_once(
    service: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_inception_weights(monkeypatch, "models/weights-inception.pth")
    storage = storage_from_settings(get_settings())
    storage.put_bytes("models/weights-inception.pth", b"not really weights")

    path = local_inception_weights(get_settings(), storage)
    assert path == service.resolve() / "inception" / "weights-inception.pth"
    assert path.read_bytes() == b"not really weights"
    (storage.root / "models" / "weights-inception.pth").unlink()
    assert local_inception_weights(get_settings(), storage) == path  # the local copy is reused


def test_old_checkpoints_leave_storage_keeping_the_newest(
    service: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGAN_KEEP_CHECKPOINTS", "2")
    reset_caches()
    job_id = new_job({**TINY, "steps": 5, "checkpoint_every": 1})

    assert train_job(job_id, get_settings()) == "succeeded"

    storage = storage_from_settings(get_settings())
    assert storage.list(f"jobs/{job_id}/checkpoints/") == [
        checkpoint_key(job_id, 4),
        checkpoint_key(job_id, 5),
    ]
    with session_scope(get_settings()) as session:
        kept = session.execute(
            select(Checkpoint.step).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
        )
        assert list(kept.scalars()) == [4, 5]
        assert job_models(session, job_id)["latest"].step == 5
        speeds = read_metrics(session, job_id, names=["images_per_s"])["images_per_s"]
    # The finished job shows its measured speed: the last windows' images over their time (#26).
    last = [v for _, v in speeds][-8:]
    assert job_row(job_id).images_per_s == pytest.approx(len(last) / sum(1 / v for v in last))


def _no_run_left_behind(data_dir: Path, job_id: str) -> None:
    assert run_dirs_left(data_dir) == []
    with session_scope(get_settings()) as session:
        assert newest_checkpoint(session, job_id) is None


@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_device_the_worker_lacks_fails_the_job_at_once_in_one_line(
    service: Path, device: str
) -> None:
    job_id = new_job({**TINY, "steps": 2, "device": device})

    assert train_job(job_id, get_settings()) == "failed"

    job = job_row(job_id)
    assert job.error == (
        f"invalid config: device: {device!r} asked for, but this worker has no CUDA device "
        "(SAGAN_WORKER_DEVICE=cpu)"
    )
    assert job.step == 0
    _no_run_left_behind(service, job_id)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_worker_device_setting_the_machine_lacks_fails_the_job_naming_it(
    service: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGAN_WORKER_DEVICE", "cuda:1")
    reset_caches()
    job_id = new_job({**TINY, "steps": 2})  # device "auto": the worker's setting

    assert train_job(job_id, get_settings()) == "failed"

    assert job_row(job_id).error == (
        "invalid config: device: 'cuda:1' asked for, but this worker has no CUDA device "
        "(SAGAN_WORKER_DEVICE=cuda:1)"
    )


@pytest.mark.parametrize("where", ["outside", "symlink"])
def test_data_root_outside_the_data_roots_fails_the_job(
    service: Path, tmp_path: Path, where: str
) -> None:
    # Queued before the operator tightened SAGAN_DATA_ROOTS (here: the default), or written
    # around the API: the worker checks the location again before it reads anything.
    images = tmp_path / "images"
    (images / "cats").mkdir(parents=True)
    data_root = str(images)
    if where == "symlink":
        (service / "datasets").mkdir()
        (service / "datasets" / "link").symlink_to(images, target_is_directory=True)
        data_root = str(service / "datasets" / "link")
    job_id = new_job({**TINY, "steps": 2, "dataset": "folder", "data_root": data_root})

    assert train_job(job_id, get_settings()) == "failed"

    error = job_row(job_id).error
    assert error.startswith(f"invalid config: data_root: {data_root!r} ")
    assert "outside the allowed data roots" in error
    assert str((service / "datasets").resolve()) in error
    _no_run_left_behind(service, job_id)


def test_data_roots_of_the_worker_settings_allow_a_folder(
    service: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "images"
    (images / "cats").mkdir(parents=True)
    monkeypatch.setenv("SAGAN_DATA_ROOTS", str(tmp_path))
    reset_caches()
    job_id = new_job({**TINY, "steps": 2, "dataset": "folder", "data_root": "images"})

    assert train_job(job_id, get_settings()) == "failed"

    # Past the location check (relative: under the first root): the data itself is the problem.
    error = job_row(job_id).error
    assert error.startswith("dataset error: ") and str(images.resolve()) in error


def test_a_limit_tightened_after_the_job_was_queued_fails_it(
    service: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = new_job({**TINY, "steps": 2})  # batch_size 4
    monkeypatch.setenv("SAGAN_MAX_BATCH_SIZE", "2")
    reset_caches()

    assert train_job(job_id, get_settings()) == "failed"

    assert job_row(job_id).error == (
        "invalid config: batch_size: must be <= 2 (got 4); "
        "the operator's limit is SAGAN_MAX_BATCH_SIZE"
    )
    _no_run_left_behind(service, job_id)


def test_a_limit_raised_by_the_operator_is_honoured_by_the_worker(
    service: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # d_steps 11 is over the default limit: the Trainer gets the worker's limits, not those.
    monkeypatch.setenv("SAGAN_MAX_D_STEPS", "11")
    reset_caches()
    job_id = new_job({**TINY, "steps": 1, "d_steps": 11, "checkpoint_every": 0})

    assert train_job(job_id, get_settings()) == "succeeded"
