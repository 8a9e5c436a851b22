"""The API fuzzed against its own OpenAPI document (schemathesis): no 5xx, no status the document
does not declare, no body or content type that breaks it, no operation that takes a request
without a valid token. On the distributed backends (PostgreSQL, Redis, S3) with auth on.

Reproducible and bounded: a fixed seed (each operation's Hypothesis seed is derived from it and
the operation's label), at most MAX_EXAMPLES fuzzed cases per operation after schemathesis's
explicit examples and its deterministic coverage cases (boundaries, missing and wrong-typed
values), no shrinking, and a hard time limit. Seeded rows (a job with metrics and events, a model
with a real tiny checkpoint, a stored sample grid) and hooks that sometimes put their ids, and
valid classes and pixels, into the generated requests let the fuzzer reach real resources, not
only 404s and 400s.

To explore beyond the fixed seed: SAGAN_FUZZ_SEED=<int> SAGAN_FUZZ_EXAMPLES=<n>.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis.errors import HypothesisException
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

SEED = int(os.environ.get("SAGAN_FUZZ_SEED", "20250610"))
# 150 keeps `make test` near 20 minutes on 2 cores (300 took ~230 s of it); raise it to explore.
MAX_EXAMPLES = int(os.environ.get("SAGAN_FUZZ_EXAMPLES", "150"))
TIME_LIMIT_S = 480  # the whole test, seeding included: 1-2 minutes on 2 cores, 5+ under load
ADMIN_ONLY = {
    "GET /metrics"
}  # called with an admin's token (test_api_prometheus: a user's is a 403)
USER = "fuzz"

CHECKS = [
    not_a_server_error,  # no 5xx
    status_code_conformance,  # every status is declared for the operation
    content_type_conformance,  # the declared media type
    response_schema_conformance,  # the body validates against the declared schema
    response_headers_conformance,  # declared response headers (WWW-Authenticate on 401)
    negative_data_rejection,  # a request the document calls invalid is refused with a 4xx
    ignored_auth,  # without a token, or with a bad one, a protected operation is a 401
]


def _declared_body_validator(document: dict[str, Any]) -> Callable[..., None]:
    """A check like response_schema_conformance, with jsonschema's Draft 2020-12 validator over
    the document exactly as the app serves it.

    Needed because schemathesis 4.32 rewrites `prefixItems` (how OpenAPI 3.1 / pydantic spell a
    tuple, e.g. MetricsOut's `[step, value]` pairs) into the draft-4 `items: [...]` form before
    validating a response with a Draft 2020-12 validator, which rejects that form: its own check
    raises InvalidSchema on a valid document. Where a response schema has a tuple, this check
    stands in for it (test_api_fuzz); everywhere else it runs beside it.
    """
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    uri = "urn:sagan:openapi"
    registry = Registry().with_resource(uri, Resource.from_contents(document, DRAFT202012))

    def escaped(*parts: str) -> str:
        return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)

    def declared_body_conformance(ctx: Any, response: Any, case: schemathesis.Case) -> None:
        operation = document["paths"][case.operation.path][case.operation.method.lower()]
        declared = operation["responses"].get(str(response.status_code))
        media_type = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
        content = (declared or {}).get("content") or {}
        if media_type != "application/json" or "schema" not in content.get(media_type, {}):
            return  # undeclared statuses and media types: the other checks' business
        where = escaped(
            "paths", case.operation.path, case.operation.method.lower(), "responses",
            str(response.status_code), "content", media_type, "schema",
        )  # fmt: skip
        validator = Draft202012Validator({"$ref": f"{uri}#{where}"}, registry=registry)
        errors = sorted(validator.iter_errors(response.json()), key=lambda e: list(e.path))
        assert not errors, (
            f"{response.status_code} body does not match its declared schema: "
            + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        )

    return declared_body_conformance


def _has_tuple(node: Any, schemas: dict[str, Any], seen: frozenset[str] = frozenset()) -> bool:
    """Whether a schema (following its `$ref`s into `schemas`) has a `prefixItems` anywhere."""
    if isinstance(node, list):
        return any(_has_tuple(v, schemas, seen) for v in node)
    if not isinstance(node, dict):
        return False
    if "prefixItems" in node:
        return True
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        name = ref.rsplit("/", 1)[1]
        if name not in seen and _has_tuple(schemas[name], schemas, seen | {name}):
            return True
    return any(_has_tuple(v, schemas, seen) for k, v in node.items() if k != "$ref")


@dataclass
class World:
    """What the fuzzer may aim at: real ids of the caller's resources, and what it saw."""

    headers: dict[str, str]
    job_ids: list[str]
    model_ids: list[str]
    grid_job_id: str
    grid_step: int
    sweep_ids: list[str] = field(default_factory=list)
    # An admin's, for the operations only an admin may call (GET /metrics spans every owner)
    admin_headers: dict[str, str] = field(default_factory=dict)
    checks: dict[str, list[Callable[..., Any]]] = field(default_factory=dict)  # per operation
    seen: Counter = field(default_factory=Counter)  # (operation label, status)
    failed: bool = False


def _seed_rows(checkpoint: Path, make_model: Callable[..., dict]) -> dict[str, Any]:
    from store import jobs
    from store.db import session_scope
    from store.metrics import write_metrics
    from store.sample_grids import sample_grid_key
    from store.settings import get_settings
    from store.storage import storage_from_settings
    from store.sweeps import create_sweep
    from store.tokens import create_token
    from sweeps.spec import parse

    settings = get_settings()
    assert settings.auth, "the fuzz run is meant to run with auth on"
    ids = make_model(checkpoint, owner=USER, step=2)  # a job, its latest and best models
    with session_scope(settings) as session:
        # It ended: a job with a checkpoint that POST /jobs/<id>/continue can continue.
        assert jobs.claim_job(session, ids["job_id"], "fuzz-worker")
        assert jobs.finish_job(session, ids["job_id"], jobs.SUCCEEDED)
        job, _ = jobs.create_job(
            session,
            owner=USER,
            kind="train",
            config={"dataset": "digits", "resolution": 32, "steps": 1000, "batch_size": 64},
            total_steps=1000,
        )
        jobs.add_event(session, job.id, "info", "seeded for the fuzz run")
        rows = [
            (name, step, 1.0 / (1 + step)) for name in ("d_loss", "g_loss") for step in range(50)
        ]
        rows += [("fid", 500, 42.5), ("is", 500, 3.25), ("kid", 500, math.nan)]  # NaN happens
        write_metrics(session, job.id, rows)
        metrics_job_id = job.id
        _, token = create_token(session, USER, note="fuzz")
        _, admin_token = create_token(session, "fuzz-operator", admin=True, note="fuzz")
        # A running sweep with no trials yet (its driver never ran): read, listed and cancelled.
        spec = parse({"space": {"lr_g": {"choice": [1e-3, 3e-4]}}, "sampler": "grid"}, 100)
        sweep_id = create_sweep(session, USER, spec.to_dict()).id
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    storage_from_settings(settings).put_bytes(sample_grid_key(ids["job_id"], 2), png.getvalue())
    return {
        "token": token, "admin_token": admin_token, "job_ids": [ids["job_id"], metrics_job_id],
        "sweep_id": sweep_id, **ids,
    }  # fmt: skip


@pytest.fixture
def fuzz_world(
    distributed_env: dict[str, str], tiny_checkpoint: Path, make_model: Callable[..., dict]
) -> Iterator[World]:
    rows = _seed_rows(tiny_checkpoint, make_model)
    world = World(
        headers={"Authorization": f"Bearer {rows['token']}"},
        job_ids=rows["job_ids"],
        model_ids=[rows["model_id"], rows["best_id"]],
        grid_job_id=rows["job_id"],
        grid_step=2,
        sweep_ids=[rows["sweep_id"]],
        admin_headers={"Authorization": f"Bearer {rows['admin_token']}"},
    )
    yield world
    print("\nfuzz: responses per operation and status:")
    for (label, status), count in sorted(world.seen.items()):
        print(f"  {label:40} {status}: {count}")
    if not world.failed:  # a run that found something stops early: that failure is the news
        answered = {label for (label, status), _ in world.seen.items() if status < 400}
        # The datasets routes are fuzzed for errors only: a 2xx needs a real archive body or a
        # seeded dataset, which the hooks do not make yet (tests/api/test_api_datasets.py has them).
        # DELETE /aliases/<alias> likewise needs an alias the hooks do not make
        # (tests/api/test_api_aliases.py deletes one).
        missed = sorted(
            c
            for c in set(world.checks) - answered
            if "/datasets" not in c and c != "DELETE /aliases/{alias}"
        )
        assert not missed, f"the fuzz run never got a 2xx/3xx from {missed}: are the hooks on?"


def _real_values(world: World, path: str) -> dict[ParameterLocation, dict[str, list[Any]]]:
    """Per part of a request to `path`: values that name the caller's seeded resources."""
    from sagan_core.config import DATASETS

    if path == "/jobs/{job_id}/samples/{step}":
        path_parameters = {"job_id": [world.grid_job_id], "step": [world.grid_step]}
    else:
        path_parameters = {
            "job_id": world.job_ids, "model_id": world.model_ids, "sweep_id": world.sweep_ids,
            "alias": ["best", "shipped-1"],  # valid names: PUT /models/<id>/aliases/<alias> works
        }  # fmt: skip
    query: dict[str, list[Any]] = {}
    if path.startswith("/models/{model_id}/"):  # classes and pixels of the 32 px, 10-class model
        query = {"class": ["3", "seven"], "x": [0, 31], "y": [0, 17], "n": [1, 4]}
    body: dict[str, list[Any]] = {}
    if path == "/jobs":  # an evaluation of a real model, against each dataset's reference data
        body = {
            "kind": ["evaluate"],
            "model_id": world.model_ids,
            "dataset": [None, *DATASETS],
            "classes": [None, [3, "seven"], [0, 9, "zero"]],
        }
    if path == "/jobs/{job_id}/continue":  # past the seeded checkpoint's step 2
        body = {"steps": [10, 2000], "config": [None, {"d_steps": 2}, {"batch_size": 16}]}
    return {
        ParameterLocation.PATH: path_parameters,
        ParameterLocation.QUERY: query,
        ParameterLocation.BODY: body,
    }


@pytest.fixture
def fuzz_schema(fuzz_world: World) -> Any:
    from api.app import create_app

    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "no-shrink": True,
                # The token is ours (a real one, sent with every request); schemathesis neither
                # generates the Authorization header nor drops it as a "negative" case. Whether
                # an operation takes a missing or a bad token is what ignored_auth checks.
                "with-security-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
        }
    )
    app = create_app()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    world = fuzz_world
    document = app.openapi()
    declared_body_conformance = _declared_body_validator(document)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            checks = [*CHECKS, declared_body_conformance]
            if _has_tuple(operation["responses"], document["components"]["schemas"]):
                checks.remove(response_schema_conformance)  # see _declared_body_validator
            world.checks[f"{method.upper()} {path}"] = checks

    def flatmap_case(context: Any, case: schemathesis.Case) -> st.SearchStrategy:
        """The case, or (as often) the case with some of its valid parts' values set to real
        ones; a part generated invalid (negative mode) is left as it is, so it stays invalid."""
        real: dict[ParameterLocation, dict[str, list[Any]]] = {}
        for location, values in _real_values(world, case.operation.path).items():
            container = getattr(case, location.container_name)
            if (case.meta and case.meta.is_negative_at(location)) or not isinstance(
                container, dict
            ):
                continue
            if keys := [k for k in values if k in container]:
                real[location] = {k: values[k] for k in keys}
        if not real:
            return st.just(case)

        def with_real(chosen: dict[ParameterLocation, dict[str, Any]]) -> schemathesis.Case:
            for location, values in chosen.items():
                getattr(case, location.container_name).update(values)
            return case

        choice = st.fixed_dictionaries(
            {
                location: st.fixed_dictionaries({k: st.sampled_from(v) for k, v in values.items()})
                for location, values in real.items()
            }
        )
        return st.one_of(st.just(case), choice.map(with_real))

    schema.hook(flatmap_case)
    return schema


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32 reads and rewrites `node._nodeid` (to name each operation's subtest);
    # pytest 9.2 keeps the id elsewhere. The attribute it wants, so from_fixture works.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.mark.timeout(TIME_LIMIT_S)
@schema.parametrize()
def test_api_fuzz(case: schemathesis.Case, fuzz_world: World) -> None:
    checks = fuzz_world.checks[case.operation.label]
    admin_only = case.operation.label in ADMIN_ONLY
    headers = fuzz_world.admin_headers if admin_only else fuzz_world.headers
    try:
        response = case.call_and_validate(headers=dict(headers), checks=checks)
    except HypothesisException:
        raise  # a rejected case, not a finding
    except (FailureGroup, Exception):  # FailureGroup: a BaseExceptionGroup of check failures
        fuzz_world.failed = True
        raise
    fuzz_world.seen[(case.operation.label, response.status_code)] += 1
