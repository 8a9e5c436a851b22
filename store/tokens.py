"""API tokens: random, high-entropy, shown once, stored only as a SHA-256 hash.

A token is `sgn_` + 43 URL-safe characters (256 random bits). With that much entropy a fast hash is
enough: nobody can guess a preimage, so no salt or slow KDF is needed, and a lookup is one indexed
SELECT. A bootstrap admin token may also come from the environment (SAGAN_ADMIN_TOKEN).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from store.models import ApiToken, utcnow

PREFIX = "sgn_"
USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
BOOTSTRAP_ADMIN = "admin"


@dataclass(frozen=True)
class Identity:
    """Who is calling: the owner of what they create, and whether they may see everyone's."""

    user: str
    admin: bool = False


class TokenError(ValueError):
    pass


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_user(user: str) -> str:
    if not USER_RE.match(user):
        raise TokenError(
            f"user: 1-128 letters, digits or '_.@-', starting with a letter or digit "
            f"(got {user[:40]!r})"
        )
    return user


def create_token(
    session: Session, user: str, *, admin: bool = False, note: str | None = None
) -> tuple[ApiToken, str]:
    """A new token for `user`; returns its row and the token (the only time it is known)."""
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user=check_user(user),
        admin=admin,
        note=(note or None) and note[:200],
        token_hash=token_hash(token),
        prefix=token[: len(PREFIX) + 6],
    )
    session.add(row)
    session.flush()
    return row, token


def list_tokens(session: Session, include_revoked: bool = False) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.created_at)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return list(session.execute(query).scalars())


def revoke_token(session: Session, id_or_prefix: str) -> ApiToken:
    """Revoke the token with that id (or that unique displayed prefix)."""
    rows = list(
        session.execute(
            select(ApiToken).where(
                ApiToken.revoked_at.is_(None),
                or_(ApiToken.id == id_or_prefix, ApiToken.prefix == id_or_prefix),
            )
        ).scalars()
    )
    if not rows:
        raise TokenError(f"no active token with id or prefix {id_or_prefix!r}")
    if len(rows) > 1:
        raise TokenError(f"{id_or_prefix!r} matches {len(rows)} tokens; give the id")
    rows[0].revoked_at = utcnow()
    session.flush()
    return rows[0]


def any_tokens(session: Session) -> bool:
    return session.execute(select(ApiToken.id).limit(1)).first() is not None


def identify(session: Session, token: str, admin_token: str | None = None) -> Identity | None:
    """The identity a bearer token stands for, or None (unknown, revoked or malformed)."""
    if not token.startswith(PREFIX) and not admin_token:
        return None
    digest = token_hash(token)
    if admin_token and hmac.compare_digest(digest, token_hash(admin_token)):
        return Identity(BOOTSTRAP_ADMIN, admin=True)
    row = session.execute(
        select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
    ).scalar_one_or_none()
    if row is None:
        return None
    now = utcnow()
    last = row.last_used_at
    if (
        last is None
        or (now - (last if last.tzinfo else last.replace(tzinfo=now.tzinfo))).total_seconds() > 60
    ):
        session.execute(  # at most a write a minute per token
            update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now)
        )
        session.commit()
    return Identity(row.user, admin=row.admin)
