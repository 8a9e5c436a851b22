"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from api.config_schema import TrainConfigBody

MIN_EVAL_SAMPLES, MAX_EVAL_SAMPLES = 100, 100_000


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time the store writes is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class JobCreate(BaseModel):
    """A training job (`config`) or an evaluation of a model (`model_id`, `samples`, ...)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"kind": "train", "config": {"dataset": "digits", "resolution": 32, "steps": 200}},
                {"kind": "evaluate", "model_id": "<model id>", "samples": 10000},
            ]
        },
    )

    kind: Literal["train", "evaluate"] = "train"
    config: TrainConfigBody | None = Field(
        None,
        description="train: the training config (the `TrainConfig` schema: every field optional, "
        "with its choices, bounds and default). Checked by the core, field by field: a 422 names "
        "`config.<field>`; an unknown key is refused with the closest known one. The job stores "
        "it resolved (preset, widths and class count filled in).",
    )
    model_id: str | None = Field(None, max_length=32, description="evaluate: the model to score")
    samples: int | None = Field(
        None,
        ge=MIN_EVAL_SAMPLES,
        le=MAX_EVAL_SAMPLES,
        description="evaluate: generated images for IS/FID (default 50000)",
    )
    dataset: str | None = Field(
        None, max_length=64, description="evaluate: reference dataset (default: the training one)"
    )
    classes: list[StrictInt | str] | None = Field(
        None, max_length=1000, description="evaluate: classes (index or name) for per-class FID"
    )


JOB_ID, MODEL_ID = "3f2c9a6e8b1d4c7f9e0a1b2c3d4e5f60", "9d1e0b7c6a5f4e3d2c1b0a9f8e7d6c5b"


class JobOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": JOB_ID,
                    "owner": "alice",
                    "kind": "train",
                    "state": "running",
                    "config": {"dataset": "digits", "resolution": 32, "steps": 2000, "...": "..."},
                    "step": 750,
                    "total_steps": 2000,
                    "progress": 0.375,
                    "images_per_s": 410.5,
                    "eta_seconds": 97.4,
                    "attempts": 1,
                    "worker": "worker-1:4242",
                    "error": None,
                    "created_at": "2025-06-10T09:00:00Z",
                    "started_at": "2025-06-10T09:00:02Z",
                    "finished_at": None,
                    "heartbeat_at": "2025-06-10T09:01:00Z",
                    "latest_model_id": MODEL_ID,
                    "best_model_id": None,
                    "model_id": None,
                }
            ]
        }
    )

    id: str
    owner: str
    kind: str
    state: str
    config: dict[str, Any]
    step: int
    total_steps: int
    progress: float = Field(description="step / total_steps, 0..1")
    images_per_s: float | None
    eta_seconds: float | None = Field(description="remaining steps at the current images/s")
    attempts: int = Field(description="how many times a worker started it (a resume counts)")
    worker: str | None = Field(description="host:pid of the worker running it, while it runs")
    error: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None = Field(description="the first start")
    finished_at: UtcDatetime | None
    heartbeat_at: UtcDatetime | None
    latest_model_id: str | None
    best_model_id: str | None
    model_id: str | None = Field(description="evaluate: the model being scored")
    continued_from: str | None = Field(
        None, description="train: the job whose checkpoint this one continues (POST .../continue)"
    )
    continued_from_step: int | None = Field(
        None, description="train: the step of that checkpoint; this job's metrics begin after it"
    )
    defaults_note: str | None = Field(
        None,
        description="train: what the service chose for the fields the config left out, and why "
        "(`preset tiny: CPU workers, 1,200 images at 32 px; augmentation ... with ADA`)",
    )
    warning: str | None = Field(
        None,
        description="train: the latest `not learning` warning (a class collapsed onto one image, "
        "samples ignoring their class), also in the job's events; null while none",
    )
    sweep_id: str | None = Field(None, description="a sweep's trial: the sweep (GET /sweeps/<id>)")
    trial_number: int | None = Field(None, description="a sweep's trial: its number in the sweep")


class DefaultsOut(BaseModel):
    """What a training job that leaves these fields out would get, and why."""

    preset: str
    diff_augment: str | None = Field(description="null: decided by the worker (size unknown)")
    ada_target: float | None
    note: str | None = Field(description="the line the job will carry as `defaults_note`")


class JobContinue(BaseModel):
    """A new training job from another job's newest checkpoint, with a new `steps`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"steps": 4000}, {"steps": 4000, "config": {"d_steps": 2}}]
        },
    )

    steps: int = Field(
        ge=1,
        le=2**31 - 1,
        description="the new total: training goes on from the checkpoint's step up to this one",
    )
    config: dict[str, Any] | None = Field(
        None,
        description="fields to change (TrainConfig); the rest is the old job's. Fields that shape "
        "the networks (resolution, num_classes, g_ch, d_ch, z_dim, ...) and those the checkpoint "
        "carries on (lr_g, lr_d, beta1, beta2, seed) cannot change",
    )


class JobList(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class EventOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 12,
                    "at": "2025-06-10T09:00:31Z",
                    "kind": "checkpoint",
                    "from_state": None,
                    "to_state": None,
                    "message": "step 250 [latest] jobs/<id>/checkpoints/step-00000250.pt",
                }
            ]
        }
    )

    id: int
    at: UtcDatetime
    kind: str
    from_state: str | None
    to_state: str | None
    message: str | None


class SampleGridOut(BaseModel):
    step: int
    url: str = Field(description="the PNG: GET it with the same token")


class SampleGridList(BaseModel):
    job_id: str
    items: list[SampleGridOut] = Field(description="every stored grid, in step order")


class ProtocolOut(BaseModel):
    step: int
    protocol: dict[str, Any] = Field(
        description="how the scores of this step were measured: `metrics`, `feature_extractor` "
        "and `weights_sha256`, `generated` (images), `generator` (G_ema), `truncation`, `seed`, "
        "`resolution` and `resizer`, `reference` (dataset, its key or content hash, split, "
        "count), and for intra-FID its classes"
    )


class MetricsOut(BaseModel):
    job_id: str
    series: dict[str, list[tuple[int, float | None]]] = Field(
        description="per metric name, [step, value] pairs in step order; a value that is not a "
        "finite number (NaN, infinity) is null"
    )
    protocols: list[ProtocolOut] = Field(
        default_factory=list,
        description="per step with IS/FID/KID values, the protocol they were measured under: "
        "compare two FIDs only where these agree",
    )


class ModelOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": MODEL_ID,
                    "job_id": JOB_ID,
                    "owner": "alice",
                    "tag": "latest",
                    "step": 2000,
                    "resolution": 32,
                    "num_classes": 10,
                    "class_names": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
                    "checkpoint_id": "5b4a3c2d1e0f9a8b7c6d5e4f3a2b1c0d",
                    "created_at": "2025-06-10T09:00:31Z",
                    "updated_at": "2025-06-10T09:02:40Z",
                }
            ]
        }
    )

    id: str
    job_id: str
    owner: str
    tag: str
    step: int
    resolution: int
    num_classes: int
    class_names: list[str]
    checkpoint_id: str
    created_at: UtcDatetime
    updated_at: UtcDatetime
    aliases: list[str] = Field(
        default_factory=list, description="your aliases of this model: `@alias` names it too"
    )


class AliasOut(BaseModel):
    alias: str
    model_id: str
    updated_at: UtcDatetime


class AliasList(BaseModel):
    items: list[AliasOut]


class ModelList(BaseModel):
    items: list[ModelOut]
    total: int
    limit: int
    offset: int


class CheckpointUrl(BaseModel):
    url: str
    expires_in: int


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


# -- errors: every error body has a `detail` ------------------------------------------------------


class ErrorOut(BaseModel):
    """Every error answer: a message naming the parameter (or the resource) and the problem."""

    detail: str = Field(description="what went wrong, for a person to read")


class FieldError(BaseModel):
    field: str = Field(
        description="the offending field, as a dotted path (`config.resolution`, `classes[2]`); "
        "`request body` for the body as a whole"
    )
    message: str = Field(description="the field and its problem, as in `detail`")
    type: str = Field(description="a machine-readable kind: `missing`, `int_parsing`, ...")


class ValidationErrorOut(BaseModel):
    """422: a request the service cannot process; `errors` has one entry per problem."""

    detail: str = Field(description="every problem, `; `-separated")
    errors: list[FieldError]


class NotReady(BaseModel):
    """503 from /readyz: what is down, and every check's result."""

    detail: str
    status: Literal["unavailable"]
    checks: dict[str, str] = Field(description="per backend, `ok` or the error it answered with")


# -- datasets -----------------------------------------------------------------------------------


class ClassCount(BaseModel):
    name: str
    count: int


class PackedOut(BaseModel):
    size_bytes: int
    sha256: str


class DatasetOut(BaseModel):
    id: str
    name: str
    state: str = Field(description="uploading, packing, ready or failed")
    reason: str | None = Field(None, description="why it failed (one line)")
    progress: str | None = Field(
        None,
        description="while packing, where it is: `queued behind 2 pack jobs`, "
        "`packing 312/1,152 images`",
    )
    source_format: str | None = Field(None, description="zip, tar, tar.gz or packed")
    size_bytes: int = Field(description="size of the uploaded source")
    content_hash: str | None = Field(None, description="SHA-256 of the uploaded source")
    resolutions: list[int]
    classes: list[ClassCount]
    image_count: int
    packed: dict[str, PackedOut] = Field(description="packed files by resolution")
    pack_job_id: str | None
    created_at: datetime
    updated_at: datetime


class DatasetList(BaseModel):
    items: list[DatasetOut]


class DatasetRegister(BaseModel):
    name: str = Field(max_length=64)
    key: str = Field(max_length=1024, description="an object key under an allowed prefix")
    resolutions: list[int] = Field(default_factory=list, max_length=8)
