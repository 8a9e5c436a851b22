"""The configs of the jobs a caller asks for, built and checked before anything is queued: a
training config (validated by the core against the operator's limits, resolved, a stored dataset
named by id or name filled in), an evaluation's snapshot of its model, and a continued job's
config. A bad field raises InvalidField (a 422 naming it); a model of someone else's, ModelNotFound
(a 404 like a missing one)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.errors import InvalidField
from api.schemas import JobContinue, JobCreate
from sagan_core.classes import ClassError, resolve_class
from sagan_core.config import (  # stdlib only: no torch here
    DATASETS,
    EVAL_SAMPLES,
    ConfigError,
    TrainConfig,
    shown,
)
from sagan_core.data_roots import check_data_location
from sagan_core.recipe import BUILTIN_IMAGES, choose_preset, fill_augmentation
from store import datasets as stored
from store.checkpoints import owned_model
from store.models import Dataset, Job
from store.settings import Settings


def validated_train_config(
    config: dict[str, Any], settings: Settings
) -> tuple[dict[str, Any], int]:
    """The core's config, validated against the operator's limits and resolved (presets filled
    in, data_root made absolute inside the data roots), and its step count."""
    try:
        limits = settings.limits()
        cfg = TrainConfig.from_dict(config).validate(limits).resolved().validate(limits)
        cfg = check_data_location(cfg, settings.resolved_data_roots(), settings.private_paths())
    except ConfigError as e:
        raise InvalidField(f"config.{e.field}", e.message) from e
    except (ValueError, TypeError) as e:
        raise InvalidField("config", str(e)) from e
    if cfg.eval_every:
        check_can_evaluate(settings, "config.eval_every", "; or leave eval_every 0 (the variety "
                           "and class_accuracy curves need no weights)")  # fmt: skip
    return cfg.to_dict(), cfg.steps


NO_WEIGHTS = (
    "IS, FID and KID need torch-fidelity's Inception weights, and this service has none: the "
    "operator sets SAGAN_INCEPTION_WEIGHTS (a local path or storage key of "
    "weights-inception-2015-12-05-6726825d.pth), or SAGAN_INCEPTION_DOWNLOAD=true where workers "
    "reach the internet"
)


def check_can_evaluate(settings: Settings, field: str, hint: str = "") -> None:
    """A job that scores IS/FID/KID where no worker can get the weights is refused at submit."""
    if not settings.can_evaluate():
        raise InvalidField(field, NO_WEIGHTS + hint)


def evaluate_config(
    session: Session, owner: str, body: JobCreate, settings: Settings
) -> tuple[dict, int, str]:
    """An evaluation's config: a snapshot of the model's checkpoint now and the reference data it
    is scored against; its total (the images it generates), the model's id."""
    check_can_evaluate(settings, "kind")
    if not body.model_id:
        raise InvalidField("model_id", "required for evaluate jobs", "missing")
    model = owned_model(session, owner, body.model_id)
    trained = session.get(Job, model.job_id)  # the model's job: same owner, kept with the model
    stored = None
    if body.dataset is not None and (body.dataset not in DATASETS or body.dataset == "stored"):
        stored = stored_dataset_fields(session, owner, body.dataset, model.resolution, "dataset")
    reference = TrainConfig.from_dict(trained.config).reference_data(
        stored["dataset"] if stored else body.dataset
    )
    if stored:
        reference.dataset_id = stored["dataset_id"]
    classes = None
    if body.classes is not None:
        try:
            classes = sorted({resolve_class(c, model.class_names) for c in body.classes})
        except ClassError as e:
            raise InvalidField("classes", str(e)) from e
        if not classes:
            raise InvalidField("classes", "give at least one class, or leave it out")
    samples = body.samples or EVAL_SAMPLES
    # A snapshot: the checkpoint the model points at now, and the reference data it is scored
    # against. step/total_steps of an evaluation: the worker reports the model's step.
    config = {
        "model_id": model.id,
        "checkpoint_id": model.checkpoint_id,
        "checkpoint_key": model.checkpoint_key,
        "model_step": model.step,
        "samples": samples,
        "dataset": reference.dataset,
        "data_root": reference.data_root,
        "dataset_id": reference.dataset_id,
        "classes": classes,
    }
    return config, samples, model.id  # its progress: images generated of `samples`


# Kept from the checkpoint whatever the config says: the optimisers' state carries their learning
# rates and betas, and the saved random state goes on where it stopped.
CARRIED_BY_CHECKPOINT = {
    "lr_g": "the optimiser state in the checkpoint keeps its learning rate",
    "lr_d": "the optimiser state in the checkpoint keeps its learning rate",
    "beta1": "the optimiser state in the checkpoint keeps its betas",
    "beta2": "the optimiser state in the checkpoint keeps its betas",
    "seed": "the random state in the checkpoint goes on where it stopped",
}


def continued_config(
    old: dict[str, Any], body: JobContinue, checkpoint_step: int, settings: Settings
) -> tuple[dict[str, Any], int]:
    """The old job's config with the caller's changes and the new steps, validated; a change to
    a field that shapes the networks or that the checkpoint carries on is refused naming it."""
    from sagan_core.trainer import ARCH_FIELDS  # torch: loaded only when a job is continued

    overrides = dict(body.config or {})
    if "steps" in overrides:
        raise InvalidField("config.steps", "give the new total as `steps`, beside `config`")
    if body.steps <= checkpoint_step:
        raise InvalidField(
            "steps",
            f"must be more than the checkpoint's step {checkpoint_step} (got {body.steps}): "
            "the new total, counted from the start of the first job",
        )
    try:
        before = TrainConfig.from_dict(old).resolved().to_dict()
    except (ValueError, TypeError):
        before = dict(old)

    def check_kept(config: dict[str, Any]) -> None:
        for name in ARCH_FIELDS:  # None: from the data set; the trainer checks the checkpoint
            if before.get(name) is not None and name in config and config[name] != before[name]:
                raise InvalidField(
                    f"config.{name}",
                    f"{shown(config[name])} would change the architecture: the checkpoint was "
                    f"trained with {name}={shown(before[name])}; start a new job for another one",
                )
        for name, why in CARRIED_BY_CHECKPOINT.items():
            if before.get(name) is not None and name in config and config[name] != before[name]:
                was, asked = shown(before[name]), shown(config[name])
                raise InvalidField(
                    f"config.{name}", f"cannot change when continuing ({was} -> {asked}): {why}"
                )

    check_kept(overrides)  # what the caller asked for, before it is validated with the rest
    config, total_steps = validated_train_config(
        {**before, **overrides, "steps": body.steps}, settings
    )
    check_kept(config)  # and what resolving it gave
    return config, total_steps


def stored_dataset_fields(
    session: Session, owner: str, ref: str, resolution: int | None, field: str
) -> dict[str, Any]:
    """The config fields of the caller's ready dataset `ref` (id or name) at `resolution` (None:
    its only or largest one): `dataset: stored`, `dataset_id`, `resolution`, `num_classes`. Another
    user's dataset is refused exactly like a missing one (422 naming `field`)."""
    try:
        ds = stored.owned_dataset(session, owner, ref)
    except stored.DatasetNotFound:
        builtin = ", ".join(d for d in DATASETS if d != "stored")
        yours = "the id or name of one of your datasets"
        if field == "dataset":  # an evaluation's reference data
            message = f"unknown dataset {ref[:64]!r}; known: {builtin}, or {yours}"
        else:
            message = f"must be one of {builtin}, or {yours} (got {shown(ref)})"
        raise InvalidField(field, message) from None
    if ds.state != stored.READY:
        why = f" ({ds.reason})" if ds.reason else ""
        raise InvalidField(field, f"dataset {ds.name!r} is {ds.state}{why}, not ready")
    have = sorted(int(r) for r in ds.packed)
    if resolution is None:
        resolution = have[-1]
    if resolution not in have:
        raise InvalidField(
            "config.resolution" if field.startswith("config") else field,
            f"dataset {ds.name!r} is packed at {', '.join(map(str, have))} px, not {resolution}",
        )
    return {
        "dataset": "stored",
        "dataset_id": ds.id,
        "resolution": resolution,
        "num_classes": len(ds.class_names),
    }


def resolve_train_config(session: Session, owner: str, config: dict[str, Any]) -> dict[str, Any]:
    """A train config whose `dataset` is not a built-in one names a stored dataset: filled in."""
    name = config.get("dataset")
    if not isinstance(name, str) or (name in DATASETS and name != "stored"):
        return config
    ref = config.get("dataset_id") if name == "stored" else name
    if not isinstance(ref, str) or not ref or len(ref) > 64:
        return config  # the core says what is missing or too long
    resolution = config.get("resolution")
    fields = stored_dataset_fields(
        session, owner, ref, resolution if isinstance(resolution, int) else None, "config.dataset"
    )
    given = config.get("num_classes")
    if given is not None and given != fields["num_classes"]:
        raise InvalidField(
            "config.num_classes",
            f"dataset {ref!r} has {fields['num_classes']} classes (got {given})",
        )
    return {**config, **fields}


def images_of(session: Session, config: dict[str, Any]) -> int | None:
    """The image count of a config's data set where it is known at submit: a built-in one's, a
    stored one's (its row); None for a folder or packed file not yet read."""
    name = config.get("dataset", "digits")
    if name == "stored":
        ds = session.get(Dataset, config.get("dataset_id") or "")
        return ds.image_count if ds is not None and ds.image_count else None
    return BUILTIN_IMAGES.get(name) if isinstance(name, str) else None


def choose_defaults(
    session: Session, config: dict[str, Any], settings: Settings
) -> tuple[dict[str, Any], str | None]:
    """The config with what it left to the service chosen (sagan_core.recipe): the preset from
    the workers that will run it and the data set's size, augmentation from the size; and a line
    saying what was chosen and why (None: the caller chose everything). A config that does not
    parse is returned as it is: validation names its bad field."""
    try:
        cfg = TrainConfig.from_dict(config)
    except (ValueError, TypeError):
        return config, None
    images = images_of(session, config)
    said = []
    if cfg.preset is None:
        choice = choose_preset(settings.has_gpus(cfg.gpus), images, cfg.resolution)
        cfg.preset = choice.preset
        said.append(f"preset {choice.preset}: {choice.reason}")
    if images is not None and (line := fill_augmentation(cfg, images)):
        said.append(line)  # unknown size: the worker decides when it has read the data
    chosen = {k: getattr(cfg, k) for k in ("preset", "diff_augment", "ada_target")}
    return {**config, **chosen}, "; ".join(said) or None
