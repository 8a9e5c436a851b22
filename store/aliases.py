"""Model aliases: a user's names for their models (`best-digits`), per owner. `PUT` moves one to
a model, `DELETE` removes it; every model route takes `@alias` where it takes an id
(store.checkpoints.owned_model resolves it)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.checkpoints import owned_model
from store.models import ModelAlias, utcnow

ALIAS_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
ALIAS_RULE = (
    "1-64 characters: lowercase letters, digits, '.', '_', '-', starting with a letter or digit"
)


class AliasNotFound(LookupError):
    def __init__(self, alias: str):
        super().__init__(f"alias {alias!r} not found")
        self.alias = alias


def check_alias(alias: str) -> str:
    """The alias, or ValueError saying what an alias may be."""
    if not ALIAS_RE.fullmatch(alias):
        raise ValueError(f"alias {alias[:80]!r}: {ALIAS_RULE}")
    return alias


def set_alias(session: Session, owner: str, alias: str, model_ref: str) -> ModelAlias:
    """Point the owner's `alias` at their model `model_ref` (an id or another `@alias`)."""
    check_alias(alias)
    model = owned_model(session, owner, model_ref)
    row = session.get(ModelAlias, (owner, alias))
    if row is None:
        row = ModelAlias(owner=owner, alias=alias, model_id=model.id)
        session.add(row)
    else:
        row.model_id, row.updated_at = model.id, utcnow()
    session.flush()
    return row


def delete_alias(session: Session, owner: str, alias: str) -> None:
    row = session.get(ModelAlias, (owner, alias))
    if row is None:
        raise AliasNotFound(alias)
    session.delete(row)


def list_aliases(session: Session, owner: str, model_id: str | None = None) -> list[ModelAlias]:
    """The owner's aliases by name (only those of `model_id` when given)."""
    query = select(ModelAlias).where(ModelAlias.owner == owner)
    if model_id is not None:
        query = query.where(ModelAlias.model_id == model_id)
    return list(session.scalars(query.order_by(ModelAlias.alias)))
