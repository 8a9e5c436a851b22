"""An evaluation the service cannot run is refused at submit (#26): it used to be accepted, then
failed naming `inception_weights`, which is no field a user can send."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from store.db import session_scope
from store.models import Job
from store.settings import get_settings


@pytest.fixture
def no_weights(monkeypatch, tmp_path):  # noqa: ANN001, ANN201
    monkeypatch.delenv("SAGAN_INCEPTION_DOWNLOAD")  # the default: no download at run time
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache


def _jobs() -> int:
    with session_scope(get_settings()) as session:
        return session.execute(select(func.count()).select_from(Job)).scalar_one()


def test_evaluations_without_weights_are_a_422_naming_the_operators_setting(
    no_weights, embedded, make_model
):
    model = make_model(None)
    before = _jobs()
    r = embedded.client.post("/jobs", json={"kind": "evaluate", "model_id": model["model_id"]})
    assert r.status_code == 422
    error = r.json()["errors"][0]
    assert error["field"] == "kind" and "SAGAN_INCEPTION_WEIGHTS" in error["message"]
    assert "SAGAN_INCEPTION_DOWNLOAD=true" in error["message"]
    config = {"dataset": "digits", "steps": 10, "eval_every": 5}
    r = embedded.client.post("/jobs", json={"kind": "train", "config": config})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "config.eval_every"
    assert "leave eval_every 0" in r.json()["detail"]
    assert _jobs() == before  # nothing created
    r = embedded.client.post("/jobs", json={"kind": "train", "config": {"dataset": "digits"}})
    assert r.status_code == 201  # training without evaluations needs no weights


def test_weights_in_torch_hubs_cache_or_configured_let_evaluations_in(
    no_weights, embedded, make_model, tmp_path, monkeypatch
):
    from sagan_core.weights import hub_weights_path

    model = make_model(None)
    body = {"kind": "evaluate", "model_id": model["model_id"], "samples": 1000}
    hub_weights_path().parent.mkdir(parents=True)
    hub_weights_path().write_bytes(b"weights")  # a worker of this machine finds them there
    r = embedded.client.post("/jobs", json=body)
    assert r.status_code == 201
    job = r.json()
    assert (job["step"], job["total_steps"]) == (0, 1000)  # progress counts generated images
