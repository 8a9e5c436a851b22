"""POST /jobs/<id>/continue: a new train job from another job's newest checkpoint, linked to it."""

from __future__ import annotations

import pytest

from store import jobs
from store.checkpoints import checkpoint_key, register_checkpoint, resume_checkpoint
from store.db import session_scope
from store.models import Job
from store.settings import get_settings

TINY = {"dataset": "digits", "resolution": 32, "steps": 100, "batch_size": 64}
DIGITS = [str(i) for i in range(10)]


def _finished_job(service, state=jobs.SUCCEEDED, checkpoints=(50, 100), headers=None) -> str:
    """A train job posted through the API, run by a pretend worker to `state` with checkpoints
    at `checkpoints` (rows only: continuing reads no file)."""
    r = service.client.post("/jobs", json={"kind": "train", "config": TINY}, headers=headers)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    with session_scope(get_settings()) as session:
        assert jobs.claim_job(session, job_id, "w")
        job = session.get(Job, job_id)
        for step in checkpoints:
            register_checkpoint(
                session,
                job,
                step=step,
                key=checkpoint_key(job_id, step),
                size_bytes=1,
                tags={"latest"},
                resolution=32,
                class_names=DIGITS,
            )
        jobs.heartbeat(session, job_id, "w", step=max(checkpoints, default=7))
        assert jobs.finish_job(session, job_id, state, "boom" if state == jobs.FAILED else None)
    return job_id


def test_continue_makes_a_queued_job_linked_to_the_newest_checkpoint(service):
    old_id = _finished_job(service)
    old = service.client.get(f"/jobs/{old_id}").json()
    queued_before = service.queued_messages()

    r = service.client.post(
        f"/jobs/{old_id}/continue", json={"steps": 300, "config": {"d_steps": 2}}
    )
    assert r.status_code == 201, r.text
    new = r.json()
    assert r.headers["location"] == f"/jobs/{new['id']}"
    assert new["id"] != old_id and new["kind"] == "train" and new["state"] == "queued"
    assert (new["continued_from"], new["continued_from_step"]) == (old_id, 100)
    # The step counter goes on from the checkpoint: progress starts there.
    assert (new["step"], new["total_steps"], new["progress"]) == (100, 300, 0.333333)
    assert new["config"] == {**old["config"], "steps": 300, "d_steps": 2}
    assert new["latest_model_id"] is None
    assert service.queued_messages() == queued_before + 1
    assert service.client.get(f"/jobs/{new['id']}").json() == new
    events = service.client.get(f"/jobs/{new['id']}/events").json()
    assert f"continues job {old_id} from its checkpoint at step 100" in events[-1]["message"]

    # The old job is untouched and says nothing of it; the worker starts from its checkpoint,
    # until the new job has checkpoints of its own.
    assert service.client.get(f"/jobs/{old_id}").json() == old
    with session_scope(get_settings()) as session:
        new_row = session.get(Job, new["id"])
        assert resume_checkpoint(session, new_row).key == checkpoint_key(old_id, 100)
        register_checkpoint(
            session,
            new_row,
            step=150,
            key=checkpoint_key(new["id"], 150),
            size_bytes=1,
            tags={"latest"},
            resolution=32,
            class_names=DIGITS,
        )
        assert resume_checkpoint(session, new_row).key == checkpoint_key(new["id"], 150)

    # A continued job continues too.
    again = service.client.post(f"/jobs/{new['id']}/continue", json={"steps": 400})
    assert again.status_code == 409 and "is queued" in again.json()["detail"]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"g_ch": 8}, "config.g_ch"),
        ({"resolution": 64}, "config.resolution"),
        ({"z_dim": 64}, "config.z_dim"),
        ({"lr_g": 1e-4}, "config.lr_g"),
        ({"seed": 3}, "config.seed"),
        ({"steps": 500}, "config.steps"),
        ({"stepz": 5}, "config.stepz"),
        ({"batch_size": 0}, "config.batch_size"),
    ],
)
def test_changing_the_architecture_or_a_bad_field_is_a_422_naming_it(embedded, config, field):
    old_id = _finished_job(embedded)
    r = embedded.client.post(f"/jobs/{old_id}/continue", json={"steps": 300, "config": config})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}: "), r.json()
    assert r.json()["errors"][0]["field"] == field


def test_the_architecture_message_says_what_the_checkpoint_has(embedded):
    old_id = _finished_job(embedded)
    r = embedded.client.post(f"/jobs/{old_id}/continue", json={"steps": 300, "config": {"d_ch": 8}})
    assert r.json()["detail"] == (
        "config.d_ch: 8 would change the architecture: the checkpoint was trained with d_ch=4; "
        "start a new job for another one"
    )
    # Unchanged values of those fields are fine, and so is a change to any other field.
    same = {"g_ch": 4, "d_ch": 4, "resolution": 32, "lr_g": 1e-3, "batch_size": 16}
    r = embedded.client.post(f"/jobs/{old_id}/continue", json={"steps": 300, "config": same})
    assert r.status_code == 201, r.text
    assert r.json()["config"]["batch_size"] == 16


def test_steps_must_go_past_the_checkpoint(embedded):
    old_id = _finished_job(embedded)
    for steps in (50, 100):
        r = embedded.client.post(f"/jobs/{old_id}/continue", json={"steps": steps})
        assert r.status_code == 422
        assert r.json()["detail"].startswith(
            f"steps: must be more than the checkpoint's step 100 (got {steps})"
        )
    assert embedded.client.post(f"/jobs/{old_id}/continue", json={}).status_code == 422
    assert embedded.client.post(f"/jobs/{old_id}/continue", json={"steps": 101}).status_code == 201


def test_failed_and_cancelled_jobs_continue_from_their_last_checkpoint(embedded):
    for state in (jobs.FAILED, jobs.CANCELLED):
        old_id = _finished_job(embedded, state, checkpoints=(50,))
        r = embedded.client.post(f"/jobs/{old_id}/continue", json={"steps": 200})
        assert r.status_code == 201, r.text
        assert r.json()["continued_from_step"] == 50


def test_a_job_without_a_checkpoint_is_a_409_saying_so(embedded):
    old_id = _finished_job(embedded, jobs.FAILED, checkpoints=())
    r = embedded.client.post(f"/jobs/{old_id}/continue", json={"steps": 200})
    assert r.status_code == 409
    assert r.json()["detail"] == (
        f"job {old_id} has no checkpoint to continue from (it failed before its first one); "
        "start a new job instead"
    )


def test_active_and_evaluation_jobs_are_a_409(embedded, make_model):
    queued = embedded.client.post("/jobs", json={"kind": "train", "config": TINY}).json()["id"]
    r = embedded.client.post(f"/jobs/{queued}/continue", json={"steps": 200})
    assert r.status_code == 409 and r.json()["detail"].startswith(f"job {queued} is queued;")

    model = make_model(None)
    evaluation = embedded.client.post(
        "/jobs", json={"kind": "evaluate", "model_id": model["model_id"], "samples": 100}
    ).json()["id"]
    r = embedded.client.post(f"/jobs/{evaluation}/continue", json={"steps": 200})
    assert r.status_code == 409
    assert r.json()["detail"] == f"job {evaluation} is an evaluate job; only train jobs continue"


def test_another_users_job_is_a_404(service):
    old_id = _finished_job(service, headers=service.as_user("alice"))
    bob = service.as_user("bob")
    r = service.client.post(f"/jobs/{old_id}/continue", json={"steps": 200}, headers=bob)
    assert r.status_code == 404 and r.json()["detail"] == f"job '{old_id}' not found"
    r = service.client.post(
        f"/jobs/{old_id}/continue", json={"steps": 200}, headers=service.as_user("alice")
    )
    assert r.status_code == 201 and r.json()["owner"] == "alice"
    missing = service.client.post("/jobs/nope123/continue", json={"steps": 200})
    assert missing.status_code == 404 and missing.json()["detail"] == "job 'nope123' not found"
