"""The lease that lets one process at a time advance a sweep (store.sweeps): taken once, poked by
a second comer, released only when nobody poked meanwhile, and taken over once it has run out."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from store import sweeps
from store.models import Sweep, utcnow
from sweeps.spec import parse


def _sweep(session) -> str:  # noqa: ANN001
    spec = parse({"space": {"lr_g": {"choice": [1e-3]}}}, 100).to_dict()
    sweep_id = sweeps.create_sweep(session, "alice", spec).id
    session.commit()
    return sweep_id


def test_a_poke_while_held_makes_the_holder_look_again(session) -> None:  # noqa: ANN001
    sweep_id = _sweep(session)
    assert sweeps.take_lease(session, sweep_id)
    assert not sweeps.take_lease(session, sweep_id)  # a second process finds it held...
    sweeps.poke(session, sweep_id)  # ...and says something changed
    assert not sweeps.release_lease(session, sweep_id)  # the holder keeps it and passes again
    assert not sweeps.take_lease(session, sweep_id)
    assert sweeps.release_lease(session, sweep_id)  # nobody poked since: let go
    assert sweeps.take_lease(session, sweep_id)  # free for the next


def test_a_lease_its_holder_never_released_is_taken_over_once_it_runs_out(session) -> None:  # noqa: ANN001
    sweep_id = _sweep(session)
    assert sweeps.take_lease(session, sweep_id)
    session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(lease_until=utcnow() - timedelta(seconds=1))
    )
    assert sweeps.take_lease(session, sweep_id)


def test_another_owners_sweep_is_not_found(session) -> None:  # noqa: ANN001
    sweep_id = _sweep(session)
    assert sweeps.owned_sweep(session, "alice", sweep_id).id == sweep_id
    try:
        sweeps.owned_sweep(session, "mallory", sweep_id)
    except sweeps.SweepNotFound:
        pass
    else:
        raise AssertionError("mallory read alice's sweep")
