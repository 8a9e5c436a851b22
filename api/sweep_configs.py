"""A sweep's request checked against the service before anything is made: the spec
(sweeps.spec), the objective against what the workers can measure, `parallel` against the
owner's quota, the alias, and the base config resolved as POST /jobs resolves one (a stored
dataset filled in, the preset and augmentation the workers and data call for), with every choice
and both ends of every range put through the core's validation and the operator's limits. A bad
field is an InvalidField (a 422 naming it: `space.lr_g`, `base.steps`, `objective.metric`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api import job_configs
from api.errors import InvalidField
from api.sweep_schemas import SweepCreate
from sagan_core import metric_names
from store.aliases import check_alias
from store.settings import Settings
from sweeps import spec as specs

NEEDS_NO_WEIGHTS = "; use variety or class_accuracy, which need no weights"


def checked_spec(session: Session, owner: str, body: SweepCreate, settings: Settings) -> dict:
    """The sweep's spec as it is stored: checked, its base resolved."""
    raw: dict[str, Any] = body.model_dump(exclude_none=True)
    default_metric = "fid" if settings.can_evaluate() else "variety"
    try:
        spec = specs.parse(raw, settings.max_sweep_trials, default_metric)
    except specs.SpecError as e:
        raise InvalidField(e.field, e.message) from e
    if spec.metric in metric_names.SCORES:
        job_configs.check_can_evaluate(settings, "objective.metric", NEEDS_NO_WEIGHTS)
    if spec.parallel > settings.max_active_jobs:
        raise InvalidField(
            "parallel",
            f"at most {settings.max_active_jobs}, your quota of active jobs "
            f"(SAGAN_MAX_ACTIVE_JOBS); got {spec.parallel}",
        )
    if spec.promote is not None:
        try:
            check_alias(spec.promote)
        except ValueError as e:
            raise InvalidField("promote", str(e)) from e
    swept = {p.name for p in spec.space}
    try:
        base = job_configs.resolve_train_config(session, owner, spec.base)
    except InvalidField as e:
        raise InvalidField("base.dataset", e.message) from e
    base, _ = job_configs.choose_defaults(session, base, settings)
    spec.base = {k: v for k, v in base.items() if k not in swept}  # a trial's own value wins
    for config in spec.checked_configs():
        try:
            job_configs.validated_train_config(config, settings)
        except InvalidField as e:
            name = e.field.removeprefix("config.")
            where = f"space.{name}" if name in swept else f"base.{name}"
            raise InvalidField(where, e.message) from e
    return spec.to_dict()
