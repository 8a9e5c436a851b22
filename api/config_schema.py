"""A training job's `config` in the OpenAPI document: a pydantic model generated from the core's
`TrainConfig` dataclass, so the document shows every field with its type, choices, bounds,
default and description, and cannot drift from the dataclass.

The core stays the one source of truth: field names, types and defaults come from the dataclass,
choices from `CHOICES` and descriptions from `DESCRIPTIONS` (sagan_core.config_fields), upper bounds
from the operator's `Limits` (and the 32-bit ceiling every integer has), and the lower bounds
below are the ones `TrainConfig.validate` holds (tests/api/test_api_config_schema.py checks each
against the core, both sides of the bound). The model only describes: a request's config is still
checked by `TrainConfig.from_dict(...).validate(limits)`, whose `config.<field>` messages are the
API's, so it is never used to validate (see `TrainConfigBody`).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from sagan_core.config import (
    MAX_INT,
    MAX_NAME_CHARS,
    MAX_SEED,
    Limits,
    TrainConfig,
)
from sagan_core.config_fields import CHOICES, DESCRIPTIONS

SCHEMA_NAME = "TrainConfig"  # its name under the document's components.schemas

# The bounds TrainConfig.validate holds that are not operator limits (those come from Limits).
MINIMUM: dict[str, int | float] = {
    "num_classes": 1,
    "g_ch": 1,
    "d_ch": 1,
    "z_dim": 1,
    "batch_size": 1,
    "steps": 1,
    "beta1": 0,
    "beta2": 0,
    "d_steps": 1,
    "class_warmup": 0,
    "diversity_weight": 0,
    "ema_decay": 0,
    "ema_start": 0,
    "log_every": 1,
    "checkpoint_every": 0,
    "sample_every": 0,
    "eval_every": 0,
    "variety_every": 0,
    "eval_samples": 1,
    "gpus": 1,
    "nodes": 1,
    "eval_reference_samples": 2,
    "seed": 0,
}
EXCLUSIVE_MINIMUM: dict[str, int | float] = {"lr_g": 0, "lr_d": 0}
MAXIMUM: dict[str, int | float] = {"ema_decay": 1, "seed": MAX_SEED}
EXCLUSIVE_MAXIMUM: dict[str, int | float] = {"beta1": 1, "beta2": 1}
PATTERN = {"device": r"^(auto|cpu|cuda|mps|cuda:[0-9]+)$"}

EXAMPLES = [
    {"dataset": "digits", "resolution": 32, "steps": 2000},
    {"dataset": "folder", "data_root": "my-photos", "resolution": 64, "preset": "paper"},
    {"dataset": "digits", "steps": 4000, "eval_every": 1000, "eval_samples": 2000, "seed": 7},
]


def _field(name: str, hint: Any, default: Any, limits: Limits) -> tuple[Any, Any]:
    """(annotation, FieldInfo) of one TrainConfig field."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    constraints: dict[str, Any] = {}
    if name in CHOICES:
        base = Literal[tuple(CHOICES[name])]
    elif base is int:
        bound = limits.bound(name)
        constraints["le"] = bound[0] if bound else MAXIMUM.get(name, MAX_INT)
    elif base is str:
        chars = limits.data_root_chars if name == "data_root" else MAX_NAME_CHARS
        constraints["max_length"] = chars
    if base in (int, float):
        for key, table in (("ge", MINIMUM), ("gt", EXCLUSIVE_MINIMUM), ("lt", EXCLUSIVE_MAXIMUM)):
            if name in table:
                constraints[key] = table[name]
        if base is float and name in MAXIMUM:
            constraints["le"] = MAXIMUM[name]
    if name in PATTERN:
        constraints["pattern"] = PATTERN[name]
    annotation = base | None if optional else base
    return annotation, Field(default, description=DESCRIPTIONS.get(name), **constraints)


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


@functools.lru_cache(maxsize=8)
def train_config_model(limits: Limits = Limits()) -> type[BaseModel]:  # noqa: B008 (frozen)
    """The pydantic model of TrainConfig under `limits` (the operator's SAGAN_MAX_*)."""
    hints = typing.get_type_hints(TrainConfig)
    fields = {
        f.name: _field(f.name, hints[f.name], _default(f), limits)
        for f in dataclasses.fields(TrainConfig)
    }
    return create_model(
        SCHEMA_NAME,
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": EXAMPLES}),
        __doc__=(
            "A training job's config (sagan_core.config.TrainConfig). Every field is optional; "
            "null where allowed means the preset or the data set decides. Checked by the core: "
            "a 422 names the field as `config.<field>`, an unknown key with the closest known "
            "one. Upper bounds are this service's limits (SAGAN_MAX_*)."
        ),
        **fields,
    )


def train_config_schema(limits: Limits) -> dict[str, Any]:
    """The JSON schema of the config under `limits`, for the document's components."""
    return train_config_model(limits).model_json_schema(ref_template="#/components/schemas/{model}")


# Generated at import: the schema a JobCreate's `config` refers to (the app swaps in the one of
# its own limits, see document_train_config).
TrainConfigModel = train_config_model(Limits())


def _unchanged(value: Any) -> Any:
    return value


# A job's `config` as the request model takes it: any JSON object, passed on as it is to the core
# (its messages, not pydantic's), shown in the document as the TrainConfig schema.
TrainConfigBody = Annotated[
    dict[str, Any], BeforeValidator(_unchanged, json_schema_input_type=TrainConfigModel)
]


def document_train_config(app: Any, limits: Callable[[], Limits]) -> None:
    """Make `app`'s OpenAPI document show the TrainConfig schema under `limits()` (the service's
    settings), with every bound and null default as pydantic states them (FastAPI's own rendering
    drops `default: null` and writes integer bounds as floats)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            document.setdefault("components", {}).setdefault("schemas", {})[SCHEMA_NAME] = (
                train_config_schema(limits())
            )
        return app.openapi_schema

    app.openapi = openapi
