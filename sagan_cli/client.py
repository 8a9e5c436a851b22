"""The client side of a running service: where it is, which token to send, and HTTP errors as
one-line messages.

Where and who, first found wins:
  1. `SAGAN_URL` (default http://127.0.0.1:8000) and `SAGAN_TOKEN`;
  2. the login store `sagan login` writes: `$XDG_CONFIG_HOME/sagan/credentials.json` (default
     `~/.config/sagan/`, mode 0600), a token per service URL and the default URL;
  3. for a service on this machine, the first token `sagan up` kept in
     `<SAGAN_DATA_DIR or ./data>/token`.

Only the standard library and httpx (imported when a request is made): no service package.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8000"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STORE_FILE = "credentials.json"
TOKEN_FILE = "token"  # sagan_cli.main.TOKEN_FILE: what `sagan up` writes on its first start
ID_RE = re.compile(r"[0-9a-f]{32}")
LOGIN_HINT = "sagan login --url {url} --token TOKEN"


class ClientError(Exception):
    """An expected failure: printed as `error: <message>` (and a hint), never as a traceback.

    `status` is the HTTP status (None when the service could not be reached at all)."""

    def __init__(
        self, message: str, *, hint: str | None = None, status: int | None = None, code: int = 1
    ):
        super().__init__(message)
        self.message, self.hint, self.status, self.code = message, hint, status, code

    @property
    def transient(self) -> bool:
        """Worth retrying: the service is away, or answered 502/503/504."""
        return self.status is None or self.status in (502, 503, 504)


# -- credentials ------------------------------------------------------------------------------


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sagan"


def store_path() -> Path:
    return config_dir() / STORE_FILE


def embedded_token_path() -> Path:
    return Path(os.environ.get("SAGAN_DATA_DIR") or "data") / TOKEN_FILE


def normalize_url(url: str) -> str:
    """`localhost:8000/` -> `http://localhost:8000`; refuses what is not an http(s) URL."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"not an http(s) URL: {url!r}", hint="e.g. http://127.0.0.1:8000")
    return url


def is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


def mask(token: str | None) -> str:
    """The first characters only, as `sagan token list` shows them."""
    if not token:
        return "(none)"
    return f"{token[:8]}..." if len(token) > 16 else "****"


def load_store(path: Path | None = None) -> dict[str, Any]:
    """{"default": url, "hosts": {url: {"token": ..., "saved_at": ...}}}; empty when absent."""
    path = path or store_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"hosts": {}}
    except (OSError, ValueError) as e:
        raise ClientError(
            f"cannot read the login store {path}: {e}",
            hint="fix or delete it, then `sagan login` again",
        ) from e
    if not isinstance(data, dict) or not isinstance(data.get("hosts", {}), dict):
        raise ClientError(f"the login store {path} is not what `sagan login` writes", hint=None)
    data.setdefault("hosts", {})
    return data


def save_store(data: dict[str, Any], path: Path | None = None) -> Path:
    """Write the store readable by its owner only (0600, its folder 0700), atomically."""
    path = path or store_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-", suffix=".tmp")
    try:  # mkstemp makes the file 0600 before a byte of the token is in it
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str | None
    source: str  # where the token came from, for messages: "SAGAN_TOKEN", a file, or "none"


def resolve_credentials() -> Credentials:
    store: dict[str, Any] | None = None

    def the_store() -> dict[str, Any]:
        nonlocal store
        if store is None:
            store = load_store() if store_path().exists() else {"hosts": {}}
        return store

    env_url = os.environ.get("SAGAN_URL", "").strip()
    url = normalize_url(env_url or the_store().get("default") or DEFAULT_URL)
    token = os.environ.get("SAGAN_TOKEN", "").strip()
    if token:
        return Credentials(url, token, "SAGAN_TOKEN")
    saved = the_store()["hosts"].get(url) or {}
    if saved.get("token"):
        return Credentials(url, saved["token"], f"the login store {store_path()}")
    if is_loopback(url):
        path = embedded_token_path()
        try:
            token = path.read_text().strip()
        except OSError:
            token = ""
        if token:
            return Credentials(url, token, str(path))
    return Credentials(url, None, "none")


# -- HTTP -------------------------------------------------------------------------------------


def _detail(response: Any) -> str:
    """The API's `detail` (a string; FastAPI's own 422 gives a list), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):
            return "; ".join(
                str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail
            )
        return str(detail)
    text = (response.text or "").strip()
    return f"HTTP {response.status_code}" + (f": {text[:200]}" if text else "")


class Api:
    """A thin httpx client: JSON in and out, every failure a ClientError."""

    def __init__(self, creds: Credentials, timeout: float = 30.0):
        import httpx

        self.creds = creds
        headers = {"User-Agent": "sagan-cli", "Accept": "application/json"}
        if creds.token:
            headers["Authorization"] = f"Bearer {creds.token}"
        self.http = httpx.Client(base_url=creds.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # errors

    def _unreachable(self, e: Exception) -> ClientError:
        import httpx

        url = self.creds.url
        if isinstance(e, httpx.TimeoutException):
            return ClientError(f"the SAGAN service at {url} did not answer in time ({e})")
        reason = str(e) or type(e).__name__
        if isinstance(e, httpx.ConnectError) and "refused" in reason.lower():
            reason = "connection refused"
        hint = "is it running? `sagan up` starts one here"
        hint += "; SAGAN_URL or `sagan login --url URL` points elsewhere"
        return ClientError(f"cannot reach the SAGAN service at {url}: {reason}", hint=hint)

    def _refused(self, response: Any) -> ClientError:
        status, url = response.status_code, self.creds.url
        detail = _detail(response)
        if status == 401:
            login = LOGIN_HINT.format(url=url)
            if self.creds.token:
                hint = (
                    f"the token from {self.creds.source} ({mask(self.creds.token)}) was refused "
                    f"(revoked, or another service's); log in with a valid one: `{login}`"
                )
            else:
                hint = (
                    f"no token: log in with `{login}`, or set SAGAN_TOKEN (a service started with "
                    "`sagan up` keeps its first token in <data dir>/token)"
                )
            return ClientError(detail, hint=hint, status=status)
        return ClientError(detail, status=status)

    # requests

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise self._unreachable(e) from e
        if response.status_code >= 400:
            raise self._refused(response)
        return response

    def get_json(self, path: str, **params: Any) -> Any:
        params = {k: v for k, v in params.items() if v is not None}
        return self._json(self.request("GET", path, params=params))

    def post_json(self, path: str, body: Any = None, headers: dict | None = None) -> Any:
        return self._json(self.request("POST", path, json=body, headers=headers))

    def _json(self, response: Any) -> Any:
        try:
            return response.json()
        except ValueError as e:
            raise ClientError(
                f"{self.creds.url}{response.request.url.path}: expected JSON, got "
                f"{response.headers.get('content-type', 'no content type')}"
            ) from e

    @contextmanager
    def stream(self, path: str, **params: Any) -> Iterator[Any]:
        import httpx

        params = {k: v for k, v in params.items() if v is not None}
        try:
            with self.http.stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._refused(response)
                yield response
        except httpx.HTTPError as e:
            raise self._unreachable(e) from e

    def pages(self, path: str, **params: Any) -> Iterator[dict]:
        """Every item of a paginated list (`items`, `total`), 200 at a time."""
        offset = 0
        while True:
            page = self.get_json(path, limit=200, offset=offset, **params)
            yield from page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return

    def resolve_id(self, what: str, given: str) -> str:
        """A full id, or a unique prefix of one of the caller's jobs or models; a model may
        also be named `@alias` (the service resolves it)."""
        if what == "model" and given.strip().startswith("@"):
            return given.strip()
        prefix = given.strip().lower()
        if ID_RE.fullmatch(prefix):
            return prefix
        if not re.fullmatch(r"[0-9a-f]{1,31}", prefix):
            raise ClientError(
                f"{what} id {given!r}: an id is 32 hex digits; give one, or a unique prefix of one",
                hint=f"`sagan {what}s list` shows them",
            )
        path = {"job": "/jobs", "model": "/models", "sweep": "/sweeps"}[what]
        found = [item for item in self.pages(path) if item["id"].startswith(prefix)]
        if not found:
            raise ClientError(
                f"no {what} id starts with {given!r}", hint=f"`sagan {what}s list` shows them"
            )
        if len(found) > 1:
            shown = ", ".join(item["id"][: len(prefix) + 4] for item in found[:5])
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            raise ClientError(
                f"{what} id prefix {given!r} is ambiguous: {shown}{more}",
                hint="give more characters",
            )
        return found[0]["id"]


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=UTC)
