"""The TrainConfig schema in the OpenAPI document (api/config_schema.py) says what the core does:
each bound and choice is where TrainConfig.validate draws the line (so a request the document
calls invalid is refused, and one on the edge is taken), under this service's limits. Its shape
(every field with its description, type, choices, default and bounds) is held in
test_api_openapi.py."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from sagan_core.config import ConfigError, TrainConfig
from store.settings import Settings


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from api.app import create_app
    from store.settings import Settings

    return create_app(Settings(data_dir=tmp_path_factory.mktemp("schema"))).openapi()


def _typed(prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of a nullable property (`anyOf: [{...}, {type: null}]`)."""
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") != "null":
            return branch
    raise AssertionError(prop)


def _refused(field: str, value: Any) -> bool:
    """Whether the core refuses `value` for `field`. A refusal naming another field is what the
    value asks of the rest (data_root for a folder), not a refusal of the value."""
    try:
        # synthetic: any class count; data_root: what the folder and cifar data sets need
        config = {"dataset": "synthetic", "data_root": "x", field: value}
        TrainConfig.from_dict(config).validate(Settings().limits())  # the service's bounds
    except ConfigError as e:
        return e.field == field
    return False


def test_the_document_has_this_services_limits(tmp_path):
    from api.app import create_app
    from store.settings import Settings

    settings = Settings(data_dir=tmp_path, max_batch_size=16, max_data_root_chars=100)
    properties = create_app(settings).openapi()["components"]["schemas"]["TrainConfig"]
    properties = properties["properties"]
    assert _typed(properties["batch_size"])["maximum"] == 16
    assert _typed(properties["data_root"])["maxLength"] == 100


def test_every_bound_in_the_schema_is_where_the_core_draws_the_line(document):
    """Both sides of each bound: on it (or just inside an exclusive one) the core takes the value,
    just past it the core refuses it naming the field."""
    properties = document["components"]["schemas"]["TrainConfig"]["properties"]
    checked = 0
    for field, prop in properties.items():
        typed = _typed(prop)
        integer = typed.get("type") == "integer"
        step = 1 if integer else 1e-9
        cases = []
        if "minimum" in typed:
            cases += [(typed["minimum"] - step, True)]
            # g_ch, d_ch: which widths give the attention layer a multiple of 8 channels depends
            # on the resolution (their descriptions say so); 1 is never one of them.
            cases += [] if field in ("g_ch", "d_ch") else [(typed["minimum"], False)]
        if "maximum" in typed:
            cases += [(typed["maximum"], False), (typed["maximum"] + step, True)]
        if "exclusiveMinimum" in typed:
            cases += [(typed["exclusiveMinimum"], True), (typed["exclusiveMinimum"] + step, False)]
        if "exclusiveMaximum" in typed:
            cases += [(typed["exclusiveMaximum"], True), (typed["exclusiveMaximum"] - step, False)]
        if "maxLength" in typed and field != "data_root":  # data_root: the length alone
            cases += [("x" * (typed["maxLength"] + 1), True)]
        if "enum" in typed:
            cases += [(v, False) for v in typed["enum"]]
            cases += [("nope" if isinstance(typed["enum"][0], str) else 48, True)]
        for value, refused in cases:
            if isinstance(value, float) and integer:
                value = int(value)
            assert _refused(field, value) == refused, (field, value)
            checked += 1
        if typed.get("type") == "number":  # a float field is finite
            assert _refused(field, math.inf) or "maximum" in typed, field
    assert checked > 60


def test_a_config_the_schema_calls_valid_is_taken(embedded):
    """The schema's own examples and every field's default create a job."""
    from api.config_schema import EXAMPLES

    r = embedded.client.post("/jobs", json={"kind": "train", "config": EXAMPLES[0]})
    assert r.status_code == 201, r.text
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    r = embedded.client.post("/jobs", json={"kind": "train", "config": defaults})
    assert r.status_code == 201, r.text
