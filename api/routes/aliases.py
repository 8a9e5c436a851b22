"""Model aliases (MLflow's and W&B's registry aliases): your names for your models. Every model
route takes `@alias` where it takes an id: `GET /models/@best-digits/samples?class=3`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api.deps import OwnerDep, SessionDep
from api.errors import PROTECTED_RESPONSES, InvalidField, Responses, error
from api.limits import ModelIdPath
from api.schemas import AliasList, AliasOut
from store import aliases as store_aliases

router = APIRouter(tags=["models"], responses=PROTECTED_RESPONSES)
NO_ALIAS_404: Responses = {404: error("you have no such alias: `alias 'best' not found`")}
AliasPath = Annotated[
    str, Path(max_length=200, description=f"the alias: {store_aliases.ALIAS_RULE}")
]


def alias_out(row) -> AliasOut:  # noqa: ANN001  (a store.models.ModelAlias)
    return AliasOut(alias=row.alias, model_id=row.model_id, updated_at=row.updated_at)


@router.put(
    "/models/{model_id}/aliases/{alias}",
    response_model=AliasOut,
    summary="Point an alias at a model",
    responses={404: error("no such model (or another user's)")},
)
def put_alias(model_id: ModelIdPath, alias: AliasPath, session: SessionDep, owner: OwnerDep):
    """Create your alias, or move it to this model (an id or another `@alias`); `200` with it.
    An alias that breaks the naming rule is a `422` naming `alias`."""
    try:
        store_aliases.check_alias(alias)
    except ValueError as e:
        raise InvalidField("alias", str(e)) from e
    row = store_aliases.set_alias(session, owner, alias, model_id)
    session.commit()
    return alias_out(row)


@router.get("/aliases", response_model=AliasList, summary="List your aliases")
def get_aliases(session: SessionDep, owner: OwnerDep) -> AliasList:
    """Your aliases by name, each with the model it names now."""
    return AliasList(items=[alias_out(r) for r in store_aliases.list_aliases(session, owner)])


@router.delete(
    "/aliases/{alias}", status_code=204, summary="Remove an alias", responses=NO_ALIAS_404
)
def delete_alias(alias: AliasPath, session: SessionDep, owner: OwnerDep) -> Response:
    """The alias goes; the model stays."""
    store_aliases.delete_alias(session, owner, alias)
    session.commit()
    return Response(status_code=204)
