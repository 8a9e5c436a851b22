"""`sagan login` and `sagan logout`: which service the client commands talk to, and with which
token (kept per URL, mode 0600)."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from sagan_cli.client import (
    DEFAULT_URL,
    Api,
    ClientError,
    Credentials,
    load_store,
    mask,
    normalize_url,
    resolve_credentials,
    save_store,
    store_path,
)
from sagan_cli.output import echo, handled


def _read_token(token: str | None) -> str:
    if token == "-" or (token is None and not sys.stdin.isatty()):
        token = sys.stdin.readline()
    elif token is None:
        token = typer.prompt("token", hide_input=True)
    token = token.strip()
    if not token:
        raise ClientError("no token given: --token TOKEN, --token - (stdin), or type it")
    return token


@handled
def login(
    url: Annotated[
        str | None,
        typer.Option(help=f"The service (default: $SAGAN_URL, else {DEFAULT_URL})."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="The API token; - reads it from stdin; left out: asked for."),
    ] = None,
    verify: Annotated[
        bool, typer.Option(help="Check that the service accepts the token before saving it.")
    ] = True,
    status: Annotated[
        bool,
        typer.Option(
            "--status", help="Show which service and token commands use now; save nothing."
        ),
    ] = False,
) -> None:
    """Save a service URL and token for the other commands (in ~/.config/sagan, mode 0600)."""
    if status:
        _login_status()
        return
    url = normalize_url(url or os.environ.get("SAGAN_URL") or DEFAULT_URL)
    token = _read_token(token)
    if verify:
        with Api(Credentials(url, token, "--token")) as api:
            try:
                api.get_json("/jobs", limit=1)
            except ClientError as e:
                if e.status != 401:
                    raise
                raise ClientError(
                    f"{url} refused the token ({e.message}); nothing saved",
                    hint="a token from `sagan token create --user NAME` on the service, or its "
                    "first token in <data dir>/token",
                ) from e
    store = load_store()
    store["hosts"][url] = {"token": token, "saved_at": datetime.now(UTC).isoformat()}
    store["default"] = url
    path = save_store(store)
    checked = "" if verify else " (not checked)"
    echo(f"logged in to {url} with {mask(token)}{checked}; saved in {path}")
    if os.environ.get("SAGAN_TOKEN"):
        echo("note: SAGAN_TOKEN is set and goes first while it is", err=True)


def _login_status() -> None:
    creds = resolve_credentials()
    echo(f"service  {creds.url}")
    echo(f"token    {mask(creds.token)} (from {creds.source})")
    with Api(creds, timeout=10) as api:
        api.get_json("/jobs", limit=1)
    echo("status   the service accepts it")


@handled
def logout(
    url: Annotated[
        str | None, typer.Option(help="The service to forget (default: the logged-in one).")
    ] = None,
) -> None:
    """Forget a saved service and token (the login store only; SAGAN_TOKEN is yours)."""
    path = store_path()
    store = load_store()
    target = normalize_url(url) if url else store.get("default")
    if not target or target not in store["hosts"]:
        raise ClientError(f"not logged in to {target or 'any service'} (store: {path})")
    del store["hosts"][target]
    if store.get("default") == target:
        store.pop("default")
        if store["hosts"]:
            store["default"] = next(iter(store["hosts"]))
    if store["hosts"]:
        save_store(store)
    else:
        path.unlink(missing_ok=True)
    echo(f"logged out of {target}")
