"""The sweep's driver: the one who asks the sampler. Any process may run it (the API when a sweep
is created or cancelled, the worker when a trial ends, the reaper's loop every pass); a lease on the
sweep's row lets one at a time through, and one that finds it taken pokes the holder to look again.

A pass, from the database alone (nothing lives in a process, so API and worker restarts lose
nothing): tell the study how each ended trial ended (its objective from the metrics table), move
the best trial and the promoted alias, adopt a study trial a crashed pass asked for but never made
a job of, decide a rung of synchronous halving once every trial waits there or has ended (its best
resume, the rest are pruned), ask for new trials while fewer than `parallel` run, and end the
sweep when all have ended.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.trial import TrialState

from sagan_core.config import ConfigError, TrainConfig, shown
from store import jobs
from store import sweeps as rows
from store.aliases import set_alias
from store.checkpoints import job_models
from store.db import session_scope
from store.metrics import latest_of_jobs
from store.models import Job, Sweep
from store.queue import send_job
from store.settings import Settings
from sweeps import halving
from sweeps import spec as specs
from sweeps import study as studies

log = logging.getLogger(__name__)


def advance(settings: Settings, sweep_id: str) -> None:
    """Bring the sweep up to date, now or through the pass that holds its lease."""
    with session_scope(settings) as session:
        taken = rows.take_lease(session, sweep_id)
        if not taken:
            rows.poke(session, sweep_id)
    if not taken:  # after the poke: the holder looks again, or it has let go and the lease is ours
        with session_scope(settings) as session:
            if not rows.take_lease(session, sweep_id):
                return
    while True:
        try:
            advance_once(settings, sweep_id)
        except Exception:  # the next pass (the reaper's) may take it at once
            with session_scope(settings) as session:
                rows.drop_lease(session, sweep_id)
            raise
        with session_scope(settings) as session:
            if rows.release_lease(session, sweep_id):
                return


def advance_all(settings: Settings) -> None:
    """A pass over every running sweep (the reaper's loop): what a missed call left behind."""
    with session_scope(settings) as session:
        ids = rows.running_sweep_ids(session)
    for sweep_id in ids:
        try:
            advance(settings, sweep_id)
        except Exception:
            log.exception("sweep %s: the driver's pass failed; the next one retries", sweep_id)


def advance_once(settings: Settings, sweep_id: str) -> None:
    with session_scope(settings) as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            return
        spec = specs.from_stored(sweep.spec)
        trials = {j.trial_number: _trial_row(j) for j in rows.trial_jobs(session, sweep_id)}
        values = latest_of_jobs(session, [t["id"] for t in trials.values()], spec.metric)
        owner, state = sweep.owner, sweep.state
    study = studies.open_study(settings, sweep_id, spec, len(trials), create=True)
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
    _tell_ended(study, spec, trials, frozen, values)
    _move_best(settings, sweep_id, spec, study, trials, owner)
    if state != rows.RUNNING:
        return
    if spec.prune is not None and spec.prune.mode == "sync":
        if not _halve(settings, sweep_id, spec, study, trials, owner):
            return
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, trial in sorted(frozen.items()):  # asked for by a pass that died before its job
        if number not in trials and trial.state == TrialState.RUNNING:
            if not _make_trial(settings, sweep_id, spec, owner, number, trial.params, trials):
                return
    active = sum(1 for t in trials.values() if t["state"] in jobs.ACTIVE)
    while active < spec.parallel and len(trials) < spec.trials:
        trial = _ask(study, spec)
        if not _make_trial(settings, sweep_id, spec, owner, trial.number, trial.params, trials):
            return
        active += 1
    paused = any(t["state"] == jobs.PAUSED for t in trials.values())
    if len(trials) >= spec.trials and active == 0 and not paused:
        _end(settings, sweep_id, study, trials)


def _halve(settings, sweep_id, spec, study, trials, owner) -> bool:  # noqa: ANN001
    """Synchronous halving (sweeps.halving): once every trial has ended or waits at a rung, the
    lowest such rung is decided (its best go on, the rest are pruned); promoted trials resume
    while fewer than `parallel` run. False when the owner's quota holds a resume back."""
    prune = spec.prune
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}

    def waits_at(number: int) -> int | None:  # a paused trial waits at the last rung it reported
        rungs = [
            k
            for k in (
                halving.rung_index(s, prune.min_steps, prune.reduction)
                for s in frozen[number].intermediate_values
            )  # fmt: skip
            if k is not None
        ]
        return max(rungs) if rungs else None

    paused = {
        n: waits_at(n) for n, t in trials.items() if t["state"] == jobs.PAUSED and n in frozen
    }
    paused = {n: k for n, k in paused.items() if k is not None}
    promoted = {
        n for n, k in paused.items() if frozen[n].system_attrs.get(halving.PROMOTED, -1) >= k
    }
    active = sum(1 for t in trials.values() if t["state"] in jobs.ACTIVE)
    if paused and active == 0 and len(trials) >= spec.trials:
        rung = min(paused.values())
        if any(k == rung and n not in promoted for n, k in paused.items()):
            promoted |= _decide(settings, sweep_id, spec, study, frozen, trials, rung)
    for n in sorted(promoted & set(paused), key=lambda n: (paused[n], n)):
        if active >= spec.parallel:
            break
        if trials[n]["state"] != jobs.PAUSED:
            continue
        step = halving.rung_step(paused[n], prune.min_steps, prune.reduction)
        with session_scope(settings) as session:
            try:
                jobs.check_quota(session, owner, settings.max_active_jobs)
            except jobs.QuotaExceeded as e:
                rows.set_note(session, sweep_id, f"waiting to resume trial {n}: {e}")
                return False
            reason = f"promoted at step {step} by successive halving; resumes from its checkpoint"
            if jobs.move_paused(session, trials[n]["id"], jobs.QUEUED, reason):
                rows.set_note(session, sweep_id, None)
                session.commit()
                send_job(session, settings, jobs.get_job(session, trials[n]["id"]))
                trials[n]["state"] = jobs.QUEUED
                active += 1
    return True


def _decide(settings, sweep_id, spec, study, frozen, trials, rung) -> set[int]:  # noqa: ANN001
    """Every trial has reached `rung` or ended: mark its best to go on (first, so a pass that
    dies midway is redone the same way by the next), then prune the rest."""
    prune = spec.prune
    step = halving.rung_step(rung, prune.min_steps, prune.reduction)
    gone = (jobs.FAILED, jobs.CANCELLED)
    values = {
        n: t.intermediate_values[step]
        for n, t in frozen.items()
        if step in t.intermediate_values and trials.get(n, {}).get("state") not in gone
    }
    best = set(halving.winners(values, prune.reduction, spec.direction))
    for n in best:
        if frozen[n].system_attrs.get(halving.PROMOTED, -1) < rung:
            studies.set_trial_attr(settings, study, n, halving.PROMOTED, rung)
    for n in sorted(set(values) - best):
        if trials[n]["state"] != jobs.PAUSED:
            continue
        reason = halving.pruned_reason(
            spec.metric, step, values[n], list(values.values()), prune.reduction, spec.direction
        )
        with session_scope(settings) as session:
            if jobs.move_paused(session, trials[n]["id"], jobs.PRUNED, reason):
                trials[n]["state"] = jobs.PRUNED
        study.tell(n, state=TrialState.PRUNED, skip_if_finished=True)
    log.info(
        "sweep %s: rung at step %d decided: trials %s go on, of %d", sweep_id, step, sorted(best),
        len(values),
    )  # fmt: skip
    return best


def _trial_row(job: Job) -> dict[str, Any]:
    return {"id": job.id, "state": job.state, "error": job.error}


def _tell_ended(study, spec, trials, frozen, values) -> None:  # noqa: ANN001
    """The study learns how each ended trial ended: its final objective, pruned, or failed."""
    for number, trial in trials.items():
        known = frozen.get(number)
        if known is None or known.state != TrialState.RUNNING:
            continue
        if trial["state"] == jobs.SUCCEEDED and trial["id"] in values:
            study.tell(number, values[trial["id"]][1], skip_if_finished=True)
        elif trial["state"] == jobs.PRUNED:
            study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        elif trial["state"] in jobs.TERMINAL:  # failed, cancelled, or succeeded without a value
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def _move_best(settings, sweep_id, spec, study, trials, owner) -> None:  # noqa: ANN001
    try:
        best = study.best_trial
    except ValueError:  # no trial completed yet
        return
    job_id = trials.get(best.number, {}).get("id")
    if job_id is None:
        return
    with session_scope(settings) as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep.best_trial == best.number and sweep.best_value == best.value:
            return
        sweep.best_trial, sweep.best_value, sweep.best_job_id = best.number, best.value, job_id
        if spec.promote:
            model = job_models(session, job_id).get("latest")
            if model is not None:  # the model that scored the value: the trial's final one
                set_alias(session, owner, spec.promote, model.id)
                jobs.add_event(
                    session,
                    job_id,
                    "info",
                    f"@{spec.promote} now names this trial's model: the best {spec.metric} "
                    f"({best.value:.4g}) of sweep {sweep_id} so far",
                )
    log.info("sweep %s: best trial %d, %s %.4g", sweep_id, best.number, spec.metric, best.value)


def _ask(study: optuna.Study, spec: specs.SweepSpec) -> optuna.Trial:
    """The next trial from the sampler (a grid's next point, in the order the spec lists it)."""
    if spec.sampler == "grid":
        every = study.get_trials(deepcopy=False)
        if not any(t.state == TrialState.WAITING for t in every):
            study.enqueue_trial(spec.grid()[len(every)])
    study.sampler = studies.sampler(spec, len(study.get_trials(deepcopy=False)))
    return study.ask(studies.distributions(spec))


def trial_job_config(spec: specs.SweepSpec, params: dict[str, Any]) -> tuple[dict, int]:
    """A trial's job config and steps, resolved as POST /jobs resolves one (the base was checked
    against the limits at submit, with every choice and both ends of every range); a point that
    still does not validate is left to the worker, which fails it with its one line."""
    config = spec.trial_config(params)
    try:
        cfg = TrainConfig.from_dict(config).validate().resolved()
        return cfg.to_dict(), cfg.steps
    except (ConfigError, ValueError, TypeError):
        return config, int(config.get("steps") or 0)


def _make_trial(settings, sweep_id, spec, owner, number, params, trials) -> bool:  # noqa: ANN001
    """The trial's train job, queued and sent; False when the owner's quota holds it back (the
    study keeps the trial, and a later pass makes its job)."""
    config, steps = trial_job_config(spec, params)
    with session_scope(settings) as session:
        try:
            job, _ = jobs.create_job(
                session,
                owner=owner,
                kind="train",
                config=config,
                total_steps=steps,
                max_active=settings.max_active_jobs,
                sweep_id=sweep_id,
                trial_number=number,
            )
        except jobs.QuotaExceeded as e:
            session.rollback()
            rows.set_note(session, sweep_id, f"waiting to start trial {number}: {e}")
            return False
        chosen = ", ".join(f"{k}={shown(v)}" for k, v in params.items())
        jobs.add_event(session, job.id, "info", f"trial {number} of sweep {sweep_id}: {chosen}")
        rows.set_note(session, sweep_id, None)
        session.commit()
        send_job(session, settings, job)
        trials[number] = _trial_row(job)
    log.info("sweep %s: trial %d is job %s (%s)", sweep_id, number, job.id, chosen)
    return True


def _end(settings, sweep_id, study, trials) -> None:  # noqa: ANN001
    completed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    with session_scope(settings) as session:
        if completed:
            rows.end_sweep(session, sweep_id, rows.SUCCEEDED)
        else:
            errors = [t["error"] for t in trials.values() if t["error"]]
            first = f"; the first: {errors[0]}" if errors else ""
            rows.end_sweep(session, sweep_id, rows.FAILED, f"no trial finished with a value{first}")
    log.info("sweep %s ended (%d trials completed)", sweep_id, len(completed))


def cancel(session, sweep: Sweep) -> None:  # noqa: ANN001
    """Cancel the sweep and ask its active trials to stop (their checkpoints stay)."""
    rows.cancel_sweep(session, sweep.id)
    for job in rows.trial_jobs(session, sweep.id):
        if job.state in (jobs.QUEUED, jobs.RUNNING, jobs.PAUSED):
            jobs.request_cancel(session, job.id)
