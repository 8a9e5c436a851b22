"""POST/GET /jobs, cancel and events, over SQLite + filesystem broker and PostgreSQL + Redis."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import func, select

from sagan_core.config import TrainConfig
from store import jobs
from store.db import session_scope
from store.models import Job
from store.settings import get_settings

TINY = {"dataset": "digits", "resolution": 32, "steps": 100, "batch_size": 64}


def _post(service, body: dict | None = None, **kwargs):
    return service.client.post("/jobs", json=body or {"kind": "train", "config": TINY}, **kwargs)


def _job_rows() -> int:
    with session_scope(get_settings()) as session:
        return session.execute(select(func.count()).select_from(Job)).scalar_one()


def test_post_job_stores_resolved_config_and_sends_one_task(service):
    assert service.queued_messages() == 0
    r = _post(service)
    assert r.status_code == 201, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert job["state"] == "queued" and job["owner"] == "local" and job["kind"] == "train"
    assert job["total_steps"] == 100 and job["step"] == 0 and job["progress"] == 0.0
    # Resolved: the preset and widths the worker will use are filled in (tiny: ch=4 at 32px).
    assert job["config"]["preset"] == "tiny" and job["config"]["num_classes"] == 10
    assert (job["config"]["g_ch"], job["config"]["d_ch"]) == (4, 4)
    # Exactly the core's resolution of the posted config with the recipe's augmentation for
    # digits' 1,797 images (resolving the stored one again would give back whatever was stored).
    chosen = {"diff_augment": "translation,color,cutout", "ada_target": 0.6}
    assert job["config"] == TrainConfig.from_dict({**TINY, **chosen}).resolved().to_dict()
    assert job["defaults_note"] == (
        "preset tiny: CPU workers, 1,797 images at 32 px (paper would take about a day); "
        "augmentation translation,color,cutout with ADA (target 0.6): under 100,000 images"
    )
    assert service.queued_messages() == 1
    assert service.client.get(f"/jobs/{job['id']}").json() == job


def test_idempotency_key_replay_returns_the_same_job_without_a_second_task(service):
    headers = {"Idempotency-Key": "run-42"}
    first = _post(service, headers=headers)
    again = _post(service, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert _job_rows() == 1
    assert service.queued_messages() == 1
    # The same key from another user is another job; the same key for another request is refused.
    assert _post(service, headers={**headers, **service.as_user("bob")}).status_code == 201
    other = _post(service, {"kind": "train", "config": {**TINY, "steps": 7}}, headers=headers)
    assert other.status_code == 409
    assert "run-42" in other.json()["detail"] and first.json()["id"] in other.json()["detail"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"dataset": "imagenet-ish"}, "config.dataset: must be one of digits"),
        ({"resolution": 100}, "config.resolution: must be one of 32, 64, 128, 256 (got 100)"),
        ({"steps": -5}, "config.steps: must be >= 1 (got -5)"),
        ({"stepz": 5}, "config.stepz: unknown config key 'stepz'; did you mean 'steps'?"),
        ({"batchsize": 8}, "unknown config key 'batchsize'; did you mean 'batch_size'?"),
        ({"colour": "red"}, "config.colour: unknown config key 'colour'; the keys are: dataset,"),
        ({"download": None}, "config.download: must be true or false, not null"),
        ({"resolution": True}, "config.resolution: must be an integer (got true)"),
        ({"num_classes": [10]}, "config.num_classes: must be an integer (got [10])"),
        ({"steps": "ten"}, "config.steps: must be an integer (got 'ten')"),
        ({"dataset": "cifar10"}, "config.data_root: is required for dataset 'cifar10'"),
    ],
)
def test_bad_config_is_refused_naming_the_field(embedded, config: dict, message: str):
    r = _post(embedded, {"kind": "train", "config": config})
    assert r.status_code == 422
    assert message in r.json()["detail"]
    assert _job_rows() == 0 and embedded.queued_messages() == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "trainn"}, "kind: Input should be 'train' or 'evaluate' (got 'trainn')"),
        # the value as JSON, not Python: null, true, ["a"] (not None, True, ['a'])
        ({"kind": None}, "kind: Input should be 'train' or 'evaluate' (got null)"),
        ({"kind": ["train"]}, "kind: Input should be 'train' or 'evaluate' (got [\"train\"])"),
        (
            {"kind": "evaluate", "samples": True},
            "samples: Input should be greater than or equal to 100 (got true)",
        ),
        ({"kind": "train", "config": [1]}, "config: Input should be a valid dictionary"),
        ({"kind": "train", "colour": "red"}, "colour: unknown field"),
        ({"kind": "train", "samples": 1000}, "samples: only for evaluate jobs"),
        ({"kind": "evaluate"}, "model_id: required for evaluate jobs"),
    ],
)
def test_malformed_request_gives_a_readable_422(embedded, body: dict, message: str):
    r = _post(embedded, body)
    assert r.status_code == 422
    assert message in r.json()["detail"]


def test_invalid_json_body_is_a_422_not_a_500(embedded):
    r = embedded.client.post(
        "/jobs", content=b'{"kind": ', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and "invalid JSON" in r.json()["detail"]


def test_unknown_job_is_404_naming_it(embedded):
    for r in (
        embedded.client.get("/jobs/nope123"),
        embedded.client.post("/jobs/nope123/cancel"),
        embedded.client.get("/jobs/nope123/events"),
        embedded.client.get("/jobs/nope123/metrics"),
    ):
        assert r.status_code == 404
        assert r.json()["detail"] == "job 'nope123' not found"


def test_other_users_job_is_invisible(service):
    job_id = _post(service, headers=service.as_user("alice")).json()["id"]
    bob = service.as_user("bob")
    assert service.client.get(f"/jobs/{job_id}", headers=bob).status_code == 404
    assert service.client.post(f"/jobs/{job_id}/cancel", headers=bob).status_code == 404
    assert service.client.get("/jobs", headers=bob).json()["total"] == 0
    alice = service.client.get(f"/jobs/{job_id}", headers=service.as_user("alice"))
    assert alice.status_code == 200 and alice.json()["state"] == "queued"


def test_requests_without_a_valid_token_are_401(embedded):
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer sgn_not-a-token"},
        {"Authorization": "Basic YWxpY2U6cHc="},
        {"Authorization": "", "X-User": "local"},  # the old header means nothing now
    ):
        r = embedded.client.get("/jobs", headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"


def test_list_jobs_pages_newest_first_and_filters_by_state(service):
    ids = [_post(service).json()["id"] for _ in range(3)]
    service.client.post(f"/jobs/{ids[0]}/cancel")

    page1 = service.client.get("/jobs", params={"limit": 2}).json()
    page2 = service.client.get("/jobs", params={"limit": 2, "offset": 2}).json()
    assert (page1["total"], page1["limit"], page1["offset"]) == (3, 2, 0)
    assert [j["id"] for j in page1["items"] + page2["items"]] == ids[::-1]
    # The count rides on the page (store.job_reads.page_of_jobs); past the end it is counted apart.
    past = service.client.get("/jobs", params={"limit": 2, "offset": 5}).json()
    assert (past["items"], past["total"]) == ([], 3)
    none = service.client.get("/jobs", params={"state": "pruned"}).json()
    assert (none["items"], none["total"]) == ([], 0)

    cancelled = service.client.get("/jobs", params={"state": "cancelled"}).json()
    assert cancelled["total"] == 1 and cancelled["items"][0]["id"] == ids[0]
    assert service.client.get("/jobs", params={"state": "queued"}).json()["total"] == 2
    bad = service.client.get("/jobs", params={"state": "done"})
    assert bad.status_code == 422 and "state: Input should be 'queued'" in bad.json()["detail"]


def test_cancel_queued_job_then_cancel_again_is_409(service):
    job_id = _post(service).json()["id"]
    r = service.client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 200
    assert r.json()["state"] == "cancelled" and r.json()["finished_at"] is not None
    again = service.client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"job {job_id} is cancelled; only queued, running or paused jobs can be cancelled"
    )


def test_cancel_running_job_asks_it_to_stop_and_events_tell_the_story(service):
    job_id = _post(service).json()["id"]
    with session_scope(get_settings()) as session:
        assert jobs.claim_job(session, job_id, "worker-1")
    assert service.client.post(f"/jobs/{job_id}/cancel").json()["state"] == "cancelling"
    with session_scope(get_settings()) as session:
        jobs.finish_job(session, job_id, jobs.CANCELLED)
    assert service.client.post(f"/jobs/{job_id}/cancel").status_code == 409

    events = service.client.get(f"/jobs/{job_id}/events").json()
    assert [(e["kind"], e["message"]) for e in events if e["kind"] != "state"] == [
        ("info", _post(service).json()["defaults_note"])  # what was chosen, and why
    ]
    events = [e for e in events if e["kind"] == "state"]
    assert [(e["from_state"], e["to_state"]) for e in events] == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "cancelling"),
        ("cancelling", "cancelled"),
    ]
    after = service.client.get(f"/jobs/{job_id}/events", params={"after": events[1]["id"]})
    assert [e["to_state"] for e in after.json()] == ["cancelling", "cancelled"]


def test_running_job_reports_progress_eta_and_its_models(embedded, make_model):
    config = TrainConfig.from_dict({**TINY, "d_steps": 2, "gpus": 2, "nodes": 2}).resolved()
    config = config.to_dict()
    with session_scope(get_settings()) as session:  # 4 ranks: 2 GPUs on each of 2 nodes
        job, _ = jobs.create_job(
            session, owner="local", kind="train", config=config, total_steps=100
        )
        job_id = job.id
    with session_scope(get_settings()) as session:
        jobs.claim_job(session, job_id, "w")
        jobs.heartbeat(session, job_id, "w", step=25, images_per_s=320.0)
    job = embedded.client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "running" and job["attempts"] == 1
    assert job["progress"] == 0.25 and job["images_per_s"] == 320.0
    # images_per_s counts every D step's batch on every rank: a step takes 64 x 2 x 2 x 2 images
    assert job["eta_seconds"] == round(75 * 64 * 2 * 2 * 2 / 320.0, 1) == 120.0
    assert job["latest_model_id"] is None

    made = make_model(None)
    job = embedded.client.get(f"/jobs/{made['job_id']}").json()
    assert (job["latest_model_id"], job["best_model_id"]) == (made["model_id"], made["best_id"])


def test_broker_down_keeps_the_job_queued_and_an_idempotent_retry_returns_it(data_dir):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from store.migrate import upgrade
    from store.settings import Settings
    from store.tokens import create_token

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Settings given to the factory (not the environment): the app builds its own engine and broker.
    settings = Settings(data_dir=data_dir, broker_url=f"redis://127.0.0.1:{port}/0")
    upgrade(settings.resolved_database_url())
    with session_scope(settings) as session:
        token = create_token(session, "local")[1]
    client = TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"})
    headers = {"Idempotency-Key": "broker-down-1"}
    r = client.post("/jobs", json={"kind": "train", "config": TINY}, headers=headers)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "queued" and job["error"] is None
    events = client.get(f"/jobs/{job['id']}/events").json()
    assert any("broker was unavailable" in (e["message"] or "") for e in events)

    again = client.post("/jobs", json={"kind": "train", "config": TINY}, headers=headers)
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["state"]) == (job["id"], "queued")


def test_evaluate_job_is_validated_against_the_callers_model(service, make_model):
    made = make_model(None)
    model_id = made["model_id"]
    r = _post(service, {"kind": "evaluate", "model_id": model_id, "samples": 1000, "classes": [3]})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["kind"] == "evaluate" and job["model_id"] == model_id
    assert job["total_steps"] == 1000 == job["config"]["samples"]  # progress: images generated
    assert job["config"]["model_step"] == 2  # the scores land at the model's step
    assert job["config"]["checkpoint_key"] == made["key"] and job["config"]["classes"] == [3]
    assert job["config"]["dataset"] == "digits"
    assert service.queued_messages() == 1

    def refused(body: dict, headers: dict | None = None):
        r = _post(service, {"kind": "evaluate", "model_id": model_id, **body}, headers=headers)
        return r.status_code, r.json()["detail"]

    assert refused({"samples": 50}) == (
        422,
        "samples: Input should be greater than or equal to 100 (got 50)",
    )
    assert refused({"classes": [10]}) == (
        422,
        "classes: class 10 out of range: model has 10 classes (0-9)",
    )
    status, detail = refused({"dataset": "imagenet"})
    assert status == 422 and detail.startswith("dataset: unknown dataset 'imagenet'")
    assert refused({}, headers=service.as_user("bob")) == (404, f"model {model_id!r} not found")
    status, detail = refused({"model_id": "missing"})
    assert (status, detail) == (404, "model 'missing' not found")
    assert service.queued_messages() == 1
