"""Synchronous successive halving over the real API and database, with this test as the workers:
each trial's objective goes through the TrialReporter a worker uses, a paused trial is moved as
a worker's settle moves it, and the driver runs as a worker's end of job runs it. Every trial
waits at each rung until all have arrived; then the best go on from their checkpoints and the
rest are pruned with the rung's figures. tests/service/test_sweeps_e2e.py trains real ones."""

from __future__ import annotations

from store import jobs
from store.db import session_scope
from store.metrics import write_metrics
from sweeps import driver
from sweeps.pruning import PAUSED, TrialReporter

GRID = {
    "base": {"dataset": "digits", "steps": 200, "preset": "tiny"},
    "space": {"lr_g": {"choice": [0.001, 0.0003, 0.0001, 0.00003]}},
    "sampler": "grid",
    "parallel": 2,
    "objective": {"metric": "class_accuracy"},
    "prune": {"every": 50, "min_steps": 50, "reduction": 2},
}
# Each trial's class_accuracy at steps 50, 100, 150, 200: at step 50 trials 1 and 2 lead; at 100
# trial 2 has passed trial 1.
VALUES = {
    0: {50: 0.5},
    1: {50: 0.9, 100: 0.6},
    2: {50: 0.7, 100: 0.8, 150: 0.85, 200: 0.95},
    3: {50: 0.1},
}


class Workers:
    """Plays the trials' workers against the sweep: claim, report, pause or finish, advance."""

    def __init__(self, service, sweep: dict):  # noqa: ANN001
        self.client, self.sweep = service.client, sweep
        self.settings = service.client.app.state.services.settings

    def trials(self) -> dict[int, dict]:
        items = self.client.get(f"/sweeps/{self.sweep['id']}/trials").json()["items"]
        return {t["number"]: t for t in items}

    def states(self) -> dict[int, str]:
        return {n: t["state"] for n, t in self.trials().items()}

    def run(self, number: int, steps: list[int]) -> str | None:
        """Claim the trial, report its value at each of `steps` until the sweep stops it."""
        job_id = self.trials()[number]["job_id"]
        with session_scope(self.settings) as session:
            assert jobs.claim_job(session, job_id, "w")
        reporter = TrialReporter(self.settings, self.sweep["id"], number, self.sweep["spec"], 200)
        for step in steps:
            with session_scope(self.settings) as session:  # as the worker's on_metrics does
                write_metrics(session, job_id, [("class_accuracy", step, VALUES[number][step])])
            verdict = reporter.report(step, VALUES[number][step])
            if verdict is not None:
                assert verdict.end == PAUSED and f"paused at step {step}" in verdict.reason
                with session_scope(self.settings) as session:
                    assert jobs.pause_job(session, job_id, "w", verdict.reason) == jobs.PAUSED
                break
        else:
            with session_scope(self.settings) as session:
                assert jobs.finish_job(session, job_id, jobs.SUCCEEDED, worker="w")
        driver.advance(self.settings, self.sweep["id"])
        return verdict.reason if verdict else None


def test_every_trial_waits_at_each_rung_then_the_best_go_on_and_the_rest_are_pruned(
    service,  # noqa: ANN001
) -> None:
    sweep = service.client.post("/sweeps", json=GRID).json()
    assert sweep["spec"]["prune"]["mode"] == "sync"  # the default
    w = Workers(service, sweep)
    assert w.states() == {0: "queued", 1: "queued"}

    # Rung 0 (step 50): the first two wait there, holding no worker; the next two start.
    w.run(0, [50])
    reason = w.run(1, [50])
    assert "waits for every trial of the sweep to reach step 50" in reason
    assert w.states() == {0: "paused", 1: "paused", 2: "queued", 3: "queued"}
    r = service.client.post(f"/jobs/{w.trials()[0]['job_id']}/continue", json={"steps": 300})
    assert r.status_code == 409 and "paused" in r.json()["detail"]
    w.run(2, [50])
    assert w.states()[2] == "paused"  # trial 3 has not arrived: nothing is decided yet
    assert w.states()[0] == "paused"

    # The last arrives: the best half (1, 2) goes on, 0 and 3 are pruned at step 50.
    w.run(3, [50])
    trials = w.trials()
    assert {n: t["state"] for n, t in trials.items()} == {
        0: "pruned", 1: "queued", 2: "queued", 3: "pruned"
    }  # fmt: skip
    assert trials[3]["reason"] == (
        "pruned at step 50: class_accuracy 0.1, not in the best 2 of the 4 trials at step 50 "
        "(successive halving, 1/2 go on; the cut was 0.7, the median 0.6)"
    )
    events = service.client.get(f"/jobs/{trials[1]['job_id']}/events").json()
    moves = [(e["from_state"], e["to_state"]) for e in events if e["kind"] == "state"]
    assert moves[-2:] == [("running", "paused"), ("paused", "queued")], moves
    assert "promoted at step 50" in events[-1]["message"]

    # Rung 1 (step 100): the resumed trials report from there on; trial 2 now leads.
    w.run(1, [100])
    assert w.states()[1] == "paused"
    w.run(2, [100])
    assert w.states() == {0: "pruned", 1: "pruned", 2: "queued", 3: "pruned"}
    assert w.trials()[1]["reason"].startswith("pruned at step 100: class_accuracy 0.6, not in")

    # The survivor runs to the end (step 200 is not a rung to wait at: it is the trial's end).
    assert w.run(2, [150, 200]) is None
    done = service.client.get(f"/sweeps/{sweep['id']}").json()
    assert done["state"] == "succeeded", done
    assert (done["best_trial"], done["best_value"]) == (2, 0.95)
    assert done["trial_states"] == {"pruned": 3, "succeeded": 1}


def test_a_trial_retried_after_its_worker_died_at_a_rung_waits_there_again(
    service,  # noqa: ANN001
) -> None:
    """A worker lost after it reported the rung: the retry reaches the rung again, already
    reported, and still waits (the sweep has not decided it); a cancel ends a waiting trial."""
    sweep = service.client.post("/sweeps", json={**GRID, "parallel": 1}).json()
    w = Workers(service, sweep)
    job_id = w.trials()[0]["job_id"]
    with session_scope(w.settings) as session:
        assert jobs.claim_job(session, job_id, "w")
    reporter = TrialReporter(w.settings, sweep["id"], 0, sweep["spec"], 200)
    assert reporter.report(50, 0.5).end == PAUSED  # ... and the worker dies before it pauses
    with session_scope(w.settings) as session:
        assert jobs.lose_worker(session, job_id, "w", "killed", 3) == jobs.QUEUED
    assert w.run(0, [50]) is not None  # the retry: reported already, and it waits all the same
    assert w.states() == {0: "paused", 1: "queued"}

    r = service.client.post(f"/sweeps/{sweep['id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["trial_states"] == {"cancelled": 2}


def test_a_sweep_stored_before_prune_had_a_mode_keeps_asynchronous_halving() -> None:
    from sweeps import spec as specs

    old = {**GRID, "prune": {"every": 50, "min_steps": 50, "reduction": 2}}
    assert specs.from_stored(old).prune.mode == "async"
    new = specs.parse(GRID, max_trials=100)
    assert new.prune.mode == "sync" and specs.from_stored(new.to_dict()).prune.mode == "sync"
