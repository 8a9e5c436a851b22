"""A sweep's Optuna study: its RDB storage on the service's own database server, and the sampler,
pruner and distributions built from the sweep's spec, the same in every process that opens it.

Optuna keeps its own tables and its own Alembic version table (`alembic_version`, which ours is
too), so it lives beside ours, not among them: in PostgreSQL the same database's `optuna` schema
(migration 0010 creates it), in SQLite a file beside the service's (`<name>.optuna.db`).
`SAGAN_SWEEP_STORAGE_URL` names another place.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from sqlalchemy.engine import make_url

from store.settings import Settings
from sweeps.spec import Param, SweepSpec

OPTUNA_SCHEMA = "optuna"
optuna.logging.set_verbosity(optuna.logging.WARNING)  # a study per sweep; its INFO lines are noise
_lock = threading.Lock()


def storage_url(settings: Settings) -> str:
    """Where the studies live: SAGAN_SWEEP_STORAGE_URL, else beside the service's tables."""
    if settings.sweep_storage_url:
        return settings.sweep_storage_url
    url = make_url(settings.resolved_database_url())
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        stem = path[: -len(".db")] if path.endswith(".db") else path
        url = url.set(database=f"{stem}.optuna.db")
    else:
        url = url.update_query_dict({"options": f"-csearch_path={OPTUNA_SCHEMA}"})
    return url.render_as_string(hide_password=False)


@functools.cache
def _storage(url: str) -> optuna.storages.RDBStorage:
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):  # several processes write one file: wait for its lock
        kwargs["connect_args"] = {"timeout": 60}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def storage_for(settings: Settings) -> optuna.storages.RDBStorage:
    url = storage_url(settings)
    with _lock:  # the first open creates the tables: once per process
        return _storage(url)


def study_name(sweep_id: str) -> str:
    return f"sweep-{sweep_id}"


def distribution(p: Param) -> BaseDistribution:
    if p.kind == "choice":
        return CategoricalDistribution(list(p.values))
    low, high = p.values
    if p.kind in ("int", "int_log"):
        return IntDistribution(low, high, log=p.kind == "int_log")
    return FloatDistribution(low, high, log=p.kind == "log_uniform")


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    return {p.name: distribution(p) for p in spec.space}


def sampler(spec: SweepSpec, draw: int) -> optuna.samplers.BaseSampler:
    """The sampler of the `draw`-th trial. A sampler lives as long as one ask (the driver may be
    any process), so its seed moves with the draw: one seed for all would draw the same point.
    A grid is enqueued point by point (the driver), so its sampler is never consulted."""
    seed = spec.seed * 100_003 + draw
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, spec.trials // 2))
    return optuna.samplers.RandomSampler(seed=seed)


def pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.prune is None or spec.prune.mode == "sync":  # sync: the driver decides (halving)
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=spec.prune.min_steps, reduction_factor=spec.prune.reduction
    )


def open_study(
    settings: Settings, sweep_id: str, spec: SweepSpec, draw: int = 0, create: bool = False
) -> optuna.Study:
    """The sweep's study (created when `create` and missing: creation is idempotent)."""
    storage = storage_for(settings)
    name = study_name(sweep_id)
    try:
        return optuna.load_study(
            study_name=name, storage=storage, sampler=sampler(spec, draw), pruner=pruner(spec)
        )
    except KeyError:  # Optuna's "no such study"
        if not create:
            raise
    return optuna.create_study(
        storage=storage,
        study_name=name,
        direction=spec.direction,
        sampler=sampler(spec, draw),
        pruner=pruner(spec),
        load_if_exists=True,  # another process made it meanwhile
    )


def trial_handle(study: optuna.Study, settings: Settings, number: int) -> tuple[optuna.Trial, int]:
    """A live handle on trial `number` of `study` and its storage id, for report and
    should_prune from any process."""
    storage = storage_for(settings)
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return optuna.Trial(study, trial_id), trial_id


def set_trial_attr(settings: Settings, study: optuna.Study, number: int, key: str, value) -> None:  # noqa: ANN001
    """A system attribute on trial `number` (the driver's mark that it may pass a rung)."""
    _, trial_id = trial_handle(study, settings, number)
    storage_for(settings).set_trial_system_attr(trial_id, key, value)
