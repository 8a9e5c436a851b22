"""How pruning reaches a worker: the trial's job callbacks hand each value of the sweep's objective
to a TrialReporter, which reports it to the trial's study (Optuna's storage: every worker of the
sweep reads the others' values there) and asks the sweep's pruner whether to stop. A yes comes
back as a Verdict: the one line the job ends with, pruned, or paused at a rung of synchronous
halving until the sweep's driver decides the rung (sweeps.halving)."""

from __future__ import annotations

import dataclasses
import math

import optuna
from optuna.trial import TrialState

from store.settings import Settings
from sweeps import halving
from sweeps import spec as specs
from sweeps import study as studies

RUNG_KEY = "completed_rung_{}"  # where Optuna's SuccessiveHalvingPruner keeps a trial's rung value
PRUNED, PAUSED = "pruned", "paused"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the sweep says to a trial at one of its evaluations: stop for good (pruned), or wait
    at this rung for the others (paused, synchronous halving); the reason is the job's line."""

    end: str  # PRUNED | PAUSED
    reason: str


class TrialReporter:
    def __init__(
        self,
        settings: Settings,
        sweep_id: str,
        number: int,
        spec: dict,
        total_steps: int | None = None,
    ):
        self.settings, self.sweep_id, self.number = settings, sweep_id, number
        self.total_steps = total_steps  # the trial's end: no rung to wait at there
        self.spec = specs.from_stored(spec)
        self.metric = self.spec.metric
        self._trial: optuna.Trial | None = None
        self._trial_id = -1

    def _handle(self) -> optuna.Trial:
        if self._trial is None:
            study = studies.open_study(self.settings, self.sweep_id, self.spec)
            self._trial, self._trial_id = studies.trial_handle(study, self.settings, self.number)
        return self._trial

    def report(self, step: int, value: float) -> Verdict | None:
        """Report the objective at `step`; returns whether and why the trial should stop."""
        trial = self._handle()
        study = trial.study
        now = studies.storage_for(self.settings).get_trial(self._trial_id)
        if now.state != TrialState.RUNNING:  # the sweep told it already (cancelled, say)
            return None
        prune = self.spec.prune
        if prune is not None and prune.mode == "sync":
            if step not in now.intermediate_values:
                trial.report(value if math.isfinite(value) else math.nan, step)
            rung = halving.rung_index(step, prune.min_steps, prune.reduction)
            if rung is None or (self.total_steps is not None and step >= self.total_steps):
                return None  # not a rung, or the trial's end: nothing to wait for
            if now.system_attrs.get(halving.PROMOTED, -1) >= rung:
                return None  # the sweep promoted it past this rung: it resumed from here
            return Verdict(PAUSED, halving.paused_reason(self.metric, step, value, prune.reduction))
        if step in now.intermediate_values:
            return None  # a resumed run repeats a step it reported before its checkpoint
        trial.report(value if math.isfinite(value) else math.nan, step)
        if prune is None or not trial.should_prune():
            return None
        return Verdict(PRUNED, self.reason(study, step, value))

    def reason(self, study: optuna.Study, step: int, value: float) -> str:
        frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
        mine = frozen[self.number].system_attrs
        rung = 0
        while RUNG_KEY.format(rung + 1) in mine:
            rung += 1
        key = RUNG_KEY.format(rung)
        prune = self.spec.prune
        peers = [t.system_attrs[key] for t in frozen.values() if key in t.system_attrs]
        return halving.pruned_reason(
            self.metric, step, value, peers, prune.reduction, self.spec.direction,
            halving.rung_step(rung, prune.min_steps, prune.reduction),
        )  # fmt: skip
