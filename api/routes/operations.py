"""`GET /metrics`: what an operator's Prometheus scrapes (api.prometheus renders it)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import IdentityDep, ServicesDep, SessionDep
from api.errors import PROTECTED_RESPONSES, error
from api.prometheus import exposition
from store.fleet import read_fleet

router = APIRouter(tags=["operations"], responses=PROTECTED_RESPONSES)


@router.get(
    "/metrics",
    summary="Prometheus metrics of the service (an admin token)",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            "description": "Prometheus text format 0.0.4",
        },
        403: error("the token is not an admin's: the fleet's figures span every owner"),
    },
)
def metrics(session: SessionDep, services: ServicesDep, identity: IdentityDep) -> Response:
    """Request counts and latency by route template; jobs by kind and state; each queue's depth
    and oldest wait; workers alive; every running job's step, images/s, heartbeat age and
    attempts. Names and labels: docs/api.md, "Monitoring". With auth on, an admin's token
    (`sagan token create --admin`, or SAGAN_ADMIN_TOKEN): the figures span every owner."""
    if services.settings.auth and not identity.admin:
        raise HTTPException(403, "GET /metrics needs an admin's token (it spans every owner)")
    body = exposition(read_fleet(session, services.settings))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
