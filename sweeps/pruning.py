"""How pruning reaches a worker: the trial's job callbacks hand each value of the sweep's objective
to a TrialReporter, which reports it to the trial's study (Optuna's storage: every worker of the
sweep reads the others' values there) and asks the sweep's pruner whether to stop. A yes comes
back as the one line the job ends with."""

from __future__ import annotations

import math
import statistics

import optuna
from optuna.trial import TrialState

from store.settings import Settings
from sweeps import spec as specs
from sweeps import study as studies

RUNG_KEY = "completed_rung_{}"  # where Optuna's SuccessiveHalvingPruner keeps a trial's rung value


class TrialReporter:
    def __init__(self, settings: Settings, sweep_id: str, number: int, spec: dict):
        self.settings, self.sweep_id, self.number = settings, sweep_id, number
        self.spec = specs.from_stored(spec)
        self.metric = self.spec.metric
        self._trial: optuna.Trial | None = None
        self._trial_id = -1

    def _handle(self) -> optuna.Trial:
        if self._trial is None:
            study = studies.open_study(self.settings, self.sweep_id, self.spec)
            self._trial, self._trial_id = studies.trial_handle(study, self.settings, self.number)
        return self._trial

    def report(self, step: int, value: float) -> str | None:
        """Report the objective at `step`; returns why the trial should stop, or None."""
        trial = self._handle()
        study = trial.study
        now = studies.storage_for(self.settings).get_trial(self._trial_id)
        if now.state != TrialState.RUNNING:  # the sweep told it already (cancelled, say)
            return None
        if step in now.intermediate_values:
            return None  # a resumed run repeats a step it reported before its checkpoint
        trial.report(value if math.isfinite(value) else math.nan, step)
        if self.spec.prune is None or not trial.should_prune():
            return None
        return self.reason(study, trial, step, value)

    def reason(self, study: optuna.Study, trial: optuna.Trial, step: int, value: float) -> str:
        frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
        mine = frozen[self.number].system_attrs
        rung = 0
        while RUNG_KEY.format(rung + 1) in mine:
            rung += 1
        key = RUNG_KEY.format(rung)
        rung_step = self.spec.prune.min_steps * self.spec.prune.reduction**rung
        peers = [t.system_attrs[key] for t in frozen.values() if key in t.system_attrs]
        if not peers or not math.isfinite(value):
            return f"pruned at step {step}: {self.metric} is {value}"
        keep = max(len(peers) // self.spec.prune.reduction, 1)
        ordered = sorted(peers, reverse=self.spec.direction == "maximize")
        cut = ordered[keep - 1]
        return (
            f"pruned at step {step}: {self.metric} {value:.4g}, not in the best {keep} of the "
            f"{len(peers)} trials at step {rung_step} (successive halving, 1/"
            f"{self.spec.prune.reduction} go on; the cut was {cut:.4g}, the median "
            f"{statistics.median(peers):.4g})"
        )
