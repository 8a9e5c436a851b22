"""Sweeps over HTTP (no worker runs here): what a sweep makes when it starts, its trials and their
parameters, cancel, another owner's sweep, and every bad input a 422 naming its field with nothing
made. tests/service/test_sweeps_e2e.py runs sweeps to their end with real workers."""

from __future__ import annotations

import pytest

GRID = {
    "base": {"dataset": "digits", "steps": 100, "preset": "tiny"},
    "space": {
        "lr_g": {"choice": [0.001, 0.0003]},
        "diversity_weight": {"choice": [0, 0.07]},
    },
    "sampler": "grid",
    "parallel": 2,
    "objective": {"metric": "class_accuracy"},
}


def test_a_grid_sweep_queues_parallel_trials_in_the_listed_order(service) -> None:  # noqa: ANN001
    client = service.client
    before = service.queued_messages()
    r = client.post("/sweeps", json=GRID)
    assert r.status_code == 201, r.text
    sweep = r.json()
    assert r.headers["location"] == f"/sweeps/{sweep['id']}"
    assert (sweep["state"], sweep["trials"], sweep["parallel"]) == ("running", 4, 2)
    assert (sweep["metric"], sweep["direction"]) == ("class_accuracy", "maximize")
    assert sweep["trial_states"] == {"queued": 2}
    assert service.queued_messages() == before + 2

    trials = client.get(f"/sweeps/{sweep['id']}/trials").json()["items"]
    assert [t["number"] for t in trials] == [0, 1]
    assert [t["params"] for t in trials] == [
        {"lr_g": 0.001, "diversity_weight": 0},
        {"lr_g": 0.001, "diversity_weight": 0.07},
    ]
    job = client.get(f"/jobs/{trials[1]['job_id']}").json()
    assert (job["kind"], job["state"], job["total_steps"]) == ("train", "queued", 100)
    assert (job["config"]["lr_g"], job["config"]["diversity_weight"]) == (0.001, 0.07)
    assert job["config"]["preset"] == "tiny" and job["config"]["batch_size"] == 32  # resolved
    events = client.get(f"/jobs/{job['id']}/events").json()
    assert any("trial 1 of sweep" in (e["message"] or "") for e in events)
    assert [s["id"] for s in client.get("/sweeps").json()["items"]][0] == sweep["id"]

    # Cancel: no new trials, the queued ones cancelled; a second cancel is a conflict.
    r = client.post(f"/sweeps/{sweep['id']}/cancel")
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["trial_states"]) == ("cancelled", {"cancelled": 2})
    assert client.post(f"/sweeps/{sweep['id']}/cancel").status_code == 409


def test_another_owners_sweep_is_not_found(service) -> None:  # noqa: ANN001
    sweep = service.client.post("/sweeps", json={**GRID, "parallel": 1}).json()
    other = service.as_user("mallory")
    for path in (f"/sweeps/{sweep['id']}", f"/sweeps/{sweep['id']}/trials"):
        assert service.client.get(path).status_code == 200
        r = service.client.get(path, headers=other)
        assert r.status_code == 404 and "not found" in r.json()["detail"]
    assert service.client.post(f"/sweeps/{sweep['id']}/cancel", headers=other).status_code == 404
    assert service.client.get("/sweeps", headers=other).json()["total"] == 0
    assert service.client.get("/sweeps/not-an-id").status_code == 404


BAD = [
    ({"space": {"lr_gg": {"choice": [1e-3]}}}, "space.lr_gg", "did you mean 'lr_g'"),
    ({"space": {"diff_augment": {"uniform": [0, 1]}}}, "space.diff_augment", "number field"),
    ({"space": {"lr_g": {"choice": []}}}, "space.lr_g.choice", "is empty"),
    ({"space": {"steps": {"choice": [10, 20]}}}, "space.steps", "cannot vary"),
    ({"space": {"lr_g": {"log_uniform": [1e-3, 1e-4]}}}, "space.lr_g.log_uniform", "low"),
    ({"space": {"lr_g": {"choice": [-1.0, 1e-3]}}}, "space.lr_g", "lr_g"),
    ({"sampler": "grid", "space": {"lr_g": {"uniform": [1e-4, 1e-3]}}}, "space.lr_g", "grid"),
    ({"trials": 101}, "trials", "SAGAN_MAX_SWEEP_TRIALS"),
    ({"parallel": 21, "trials": 30}, "parallel", "SAGAN_MAX_ACTIVE_JOBS"),
    ({"objective": {"metric": "varietty"}}, "objective.metric", "did you mean 'variety'"),
    ({"objective": {"metric": "intra_fid"}}, "objective.metric", "not a metric trials log"),
    ({"objective": {"metric": "d_loss"}}, "objective.direction", "minimize or maximize"),
    ({"prune": {"every": 25, "min_steps": 30}}, "prune.min_steps", "multiple of every"),
    ({"promote": "no spaces"}, "promote", "alias"),
    ({"base": {"dataset": "digits", "steps": 0}}, "base.steps", "steps"),
]


@pytest.mark.parametrize(("change", "field", "says"), BAD, ids=[b[1] for b in BAD])
def test_a_bad_sweep_is_a_422_naming_its_field_and_makes_nothing(
    embedded, change: dict, field: str, says: str
) -> None:  # noqa: ANN001
    body = {"base": {"dataset": "digits", "steps": 100}, "space": {"lr_g": {"choice": [1e-3]}}}
    body.update(change)
    r = embedded.client.post("/sweeps", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == field, r.text
    assert says in r.json()["detail"], r.text
    assert embedded.client.get("/sweeps").json()["total"] == 0
    assert embedded.client.get("/jobs").json()["total"] == 0


def test_fid_is_refused_as_an_objective_where_no_worker_has_inception_weights(
    embedded, monkeypatch
) -> None:  # noqa: ANN001
    monkeypatch.delenv("SAGAN_INCEPTION_DOWNLOAD")
    embedded.client.app.state.services.settings.inception_download = False
    body = {"space": {"lr_g": {"choice": [1e-3]}}, "objective": {"metric": "fid"}}
    r = embedded.client.post("/sweeps", json=body)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "objective.metric"
    assert "variety or class_accuracy" in r.json()["detail"]


def test_passes_at_once_start_no_more_than_parallel_trials(service) -> None:  # noqa: ANN001
    """The driver runs wherever a trial ends and in every reaper: eight passes at once, after two
    trials ended, start exactly the two that fill the free slots (the lease, store.sweeps)."""
    import threading

    from store import jobs
    from store.db import session_scope
    from sweeps import driver

    sweep = service.client.post("/sweeps", json=GRID).json()
    settings = service.client.app.state.services.settings
    first = service.client.get(f"/sweeps/{sweep['id']}/trials").json()["items"]
    with session_scope(settings) as session:
        for trial in first:
            assert jobs.claim_job(session, trial["job_id"], "w")
            assert jobs.finish_job(session, trial["job_id"], jobs.FAILED, "boom")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            driver.advance(settings, sweep["id"])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    trials = service.client.get(f"/sweeps/{sweep['id']}/trials").json()["items"]
    assert [(t["number"], t["state"]) for t in trials] == [
        (0, "failed"), (1, "failed"), (2, "queued"), (3, "queued")
    ]  # fmt: skip
    assert service.client.get(f"/sweeps/{sweep['id']}").json()["state"] == "running"
