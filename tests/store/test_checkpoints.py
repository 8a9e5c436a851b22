"""Checkpoint rows: models follow the newest; pruning keeps the newest K and what is in use."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from store import jobs
from store.checkpoints import checkpoint_key, job_models, prune_checkpoints, register_checkpoint
from store.models import Checkpoint


def _train_job_with_checkpoints(session: Session, tags_by_step: dict[int, set[str]]):
    job, _ = jobs.create_job(session, owner="ann", kind="train", config={}, total_steps=10)
    for step, tags in tags_by_step.items():
        register_checkpoint(
            session,
            job,
            step=step,
            key=checkpoint_key(job.id, step),
            size_bytes=step,
            tags=tags,
            resolution=32,
            class_names=[str(i) for i in range(10)],
        )
    session.commit()
    return job


def _steps(session: Session, job_id: str) -> list[int]:
    query = select(Checkpoint.step).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
    return list(session.execute(query).scalars())


def test_models_point_at_the_newest_latest_and_best(session: Session):
    job = _train_job_with_checkpoints(
        session, {1: {"latest"}, 2: {"latest", "best"}, 3: {"latest"}}
    )
    models = job_models(session, job.id)
    assert (models["latest"].step, models["best"].step) == (3, 2)
    assert models["latest"].checkpoint_key == checkpoint_key(job.id, 3)
    assert models["best"].class_names[3] == "3" and models["best"].num_classes == 10


def test_pruning_keeps_newest_and_the_best_models_checkpoint(session: Session):
    tags = {s: {"latest"} for s in range(1, 6)}
    tags[2] = {"latest", "best"}
    job = _train_job_with_checkpoints(session, tags)

    dropped = prune_checkpoints(session, job.id, keep=2)
    session.commit()

    assert sorted(dropped) == [checkpoint_key(job.id, 1), checkpoint_key(job.id, 3)]
    assert _steps(session, job.id) == [2, 4, 5]
    assert prune_checkpoints(session, job.id, keep=0) == []  # 0 keeps everything


def test_pruning_spares_a_checkpoint_an_active_evaluation_was_given(session: Session):
    job = _train_job_with_checkpoints(session, {s: {"latest"} for s in range(1, 5)})
    jobs.create_job(
        session,
        owner="ann",
        kind="evaluate",
        config={"checkpoint_key": checkpoint_key(job.id, 1)},
        total_steps=1,
    )
    session.commit()

    dropped = prune_checkpoints(session, job.id, keep=1)

    assert sorted(dropped) == [checkpoint_key(job.id, 2), checkpoint_key(job.id, 3)]
    assert _steps(session, job.id) == [1, 4]
