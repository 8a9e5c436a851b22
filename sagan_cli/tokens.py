"""`sagan token create|list|revoke`: an operator's API tokens, straight in the service's database
(stored hashed; a token is shown once, when created)."""

from __future__ import annotations

from typing import Annotated

import typer

token_app = typer.Typer(
    help="API tokens (stored hashed; a token is shown once, when created).", no_args_is_help=True
)


def current_settings():  # noqa: ANN201
    """Settings as the environment says now (commands may have changed it). Settings that cannot
    work stop the command with a line per problem, not a traceback."""
    from pydantic import ValidationError

    from store import reset_caches
    from store.settings import get_settings

    reset_caches()
    try:
        return get_settings()
    except ValidationError as e:
        for problem in e.errors():
            where = ".".join(str(p) for p in problem["loc"])
            message = problem["msg"].removeprefix("Value error, ")
            typer.echo(f"error: settings: {where + ': ' if where else ''}{message}", err=True)
        raise typer.Exit(2) from None


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="Owner of what the token's holder creates.")],
    admin: Annotated[bool, typer.Option(help="May list everyone's jobs.")] = False,
    note: Annotated[str | None, typer.Option(help="What the token is for.")] = None,
) -> None:
    """Create a token and print it (the only time it is shown)."""
    from store.db import session_scope
    from store.tokens import TokenError, create_token

    settings = current_settings()
    try:
        with session_scope(settings) as session:
            row, token = create_token(session, user, admin=admin, note=note)
            token_id = row.id
    except TokenError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(token)
    typer.echo(
        f"token {token_id} for {user}{' (admin)' if admin else ''}; shown only now", err=True
    )


@token_app.command("list")
def token_list(
    revoked: Annotated[bool, typer.Option(help="Include revoked tokens.")] = False,
) -> None:
    """The tokens: id, user, admin, the first characters, created, last used, revoked."""
    from store.db import session_scope
    from store.tokens import list_tokens

    def when(t) -> str:  # noqa: ANN001
        return t.strftime("%Y-%m-%d %H:%M") if t else "-"

    with session_scope(current_settings()) as session:
        rows = list_tokens(session, include_revoked=revoked)
        lines = [
            f"{r.id}  {r.user:<16} {'admin' if r.admin else '     '}  {r.prefix}...  "
            f"{when(r.created_at)}  {when(r.last_used_at)}  {when(r.revoked_at)}  {r.note or ''}"
            for r in rows
        ]
    typer.echo("ID                                USER             ADMIN  TOKEN         "
               "CREATED           LAST USED         REVOKED           NOTE")  # fmt: skip
    typer.echo("\n".join(lines) if lines else "(no tokens)")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Its id (or its shown prefix).")],
) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    from store.db import session_scope
    from store.tokens import TokenError, revoke_token

    try:
        with session_scope(current_settings()) as session:
            row = revoke_token(session, token_id)
            typer.echo(f"revoked {row.id} ({row.user})")
    except TokenError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
