"""Request limits: a body over SAGAN_MAX_BODY_BYTES is a 413 that is neither read nor buffered,
an id no job or model can have is a 404 that never reaches the database, and a NUL byte in a query
or header value is a 400 naming it (PostgreSQL cannot take NUL in text)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from api.limits import ID_RE
from store.db import session_scope
from store.models import Job, new_id
from store.settings import get_settings

MiB = 1 << 20
CAP = 1_048_576  # the default of max_body_bytes
BIG = 50 * MiB
JSON = {"Content-Type": "application/json"}


def _job_rows() -> int:
    with session_scope(get_settings()) as session:
        return session.execute(select(func.count()).select_from(Job)).scalar_one()


def _spaces(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """`total` bytes of JSON whitespace, streamed: httpx sends it chunked (no Content-Length)."""
    block = b" " * chunk
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        sent += len(piece)
        yield piece


def _too_large(r: httpx.Response, size: str, limit: int = CAP) -> None:
    assert r.status_code == 413, r.text
    assert r.json() == {
        "detail": f"request body too large: {size} bytes, the limit is {limit} "
        "(SAGAN_MAX_BODY_BYTES)"
    }


# -- the body cap ---------------------------------------------------------------------------------


def test_a_50_mb_body_is_a_413_streamed_or_with_a_content_length(service):
    chunked = service.client.post("/jobs", content=_spaces(BIG), headers=JSON)
    _too_large(chunked, f"over {CAP}")
    declared = service.client.post("/jobs", content=b" " * BIG, headers=JSON)
    _too_large(declared, str(BIG))
    assert declared.headers["connection"] == "close"  # the server does not read the rest
    streamed = service.client.post(
        "/jobs", content=_spaces(BIG), headers={**JSON, "Content-Length": str(BIG)}
    )
    _too_large(streamed, str(BIG))
    assert _job_rows() == 0 and service.queued_messages() == 0

    # The same client and app go on answering.
    r = service.client.post("/jobs", json={"kind": "train", "config": {"steps": 5}})
    assert r.status_code == 201, r.text
    assert service.client.get(f"/jobs/{r.json()['id']}").status_code == 200


def test_the_cap_is_the_max_body_bytes_setting(embedded):
    client = TestClient(create_app(get_settings().model_copy(update={"max_body_bytes": 300})))
    headers = {**JSON, **embedded.as_user("local")}
    body = json.dumps({"kind": "train", "config": {"steps": 5}}).encode().ljust(300)
    assert client.post("/jobs", content=body, headers=headers).status_code == 201
    assert client.post("/jobs", content=iter([body]), headers=headers).status_code == 201
    _too_large(client.post("/jobs", content=body + b" ", headers=headers), "301", 300)
    _too_large(
        client.post("/jobs", content=iter([body[:200], body[200:], b" "]), headers=headers),
        "over 300",
        300,
    )
    assert _job_rows() == 2


class _Stream:
    """An ASGI request whose body is `total` bytes in `chunk`-sized messages, counting reads."""

    def __init__(self, total: int, chunk: int = 64 * 1024):
        self.total, self.chunk, self.read, self.calls = total, chunk, 0, 0
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        self.calls += 1
        size = min(self.chunk, self.total - self.read)
        self.read += size
        return {"type": "http.request", "body": b" " * size, "more_body": self.read < self.total}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    def response(self) -> tuple[int, dict[bytes, bytes], dict]:
        start, body = self.sent[0], b"".join(m.get("body", b"") for m in self.sent[1:])
        return start["status"], dict(start["headers"]), json.loads(body)


def _post_scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/jobs",
        "raw_path": b"/jobs",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }


def test_a_streamed_body_is_not_read_past_the_cap(embedded):
    # The app itself, called as the server calls it: it stops pulling the body at the cap.
    app, stream = create_app(get_settings()), _Stream(BIG)
    asyncio.run(app(_post_scope([(b"transfer-encoding", b"chunked")]), stream.receive, stream.send))
    status, headers, body = stream.response()
    assert status == 413 and headers[b"connection"] == b"close"
    assert body["detail"].startswith(f"request body too large: over {CAP} bytes")
    assert CAP < stream.read <= CAP + stream.chunk  # one message past the cap, then no more
    assert len(stream.sent) == 2  # only the 413: the app's own answer was not sent after it


def test_a_declared_length_over_the_cap_is_refused_before_any_read(embedded):
    app, stream = create_app(get_settings()), _Stream(BIG)
    asyncio.run(
        app(_post_scope([(b"content-length", str(BIG).encode())]), stream.receive, stream.send)
    )
    status, _, body = stream.response()
    assert status == 413 and stream.calls == 0
    assert body["detail"].startswith(f"request body too large: {BIG} bytes")


# -- the API's memory does not grow by a refused body ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_kib(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


@contextmanager
def _uvicorn(data_dir: Path, **env: str) -> Iterator[tuple[int, httpx.Client]]:
    """The real app under uvicorn on a free loopback port: (its pid, a client of it)."""
    port = _free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAGAN_")}
    environ.update(SAGAN_DATA_DIR=str(data_dir), **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app"]
        + ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        env=environ,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not start in 60 s"
            time.sleep(0.1)
        yield proc.pid, client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _warm_up(client: httpx.Client) -> None:
    # Every code path the measured requests take, once, with a body the app reads to its end.
    for _ in range(2):
        r = client.post("/jobs", content=b'{"kind": ' + b" " * (CAP - 20), headers=JSON)
        assert r.status_code == 422, r.text
        _too_large(client.post("/jobs", content=_spaces(2 * CAP), headers=JSON), f"over {CAP}")
        _too_large(client.post("/jobs", content=b" " * (2 * CAP), headers=JSON), str(2 * CAP))


def test_a_refused_50_mb_body_does_not_grow_the_servers_memory(data_dir):
    with _uvicorn(data_dir) as (pid, client):
        _warm_up(client)
        before = _peak_rss_kib(pid)
        _too_large(client.post("/jobs", content=_spaces(BIG), headers=JSON), f"over {CAP}")
        sized = {**JSON, "Content-Length": str(BIG)}
        _too_large(client.post("/jobs", content=_spaces(BIG), headers=sized), str(BIG))
        _too_large(client.post("/jobs", content=b" " * BIG, headers=JSON), str(BIG))
        after = _peak_rss_kib(pid)
        print(f"server peak RSS: {before} KiB before, {after} KiB after (+{after - before} KiB)")
        assert after - before < 20 * 1024, f"peak RSS grew {after - before} KiB"
        assert client.get("/healthz").status_code == 200


def test_the_memory_measurement_sees_a_50_mb_body_that_is_read(data_dir):
    # The control: with a cap above 50 MB the body is read and buffered, and VmHWM shows it.
    with _uvicorn(data_dir, SAGAN_MAX_BODY_BYTES=str(2 * BIG)) as (pid, client):
        _warm_up_below = client.post("/jobs", content=b'{"kind": ', headers=JSON)
        assert _warm_up_below.status_code == 422
        before = _peak_rss_kib(pid)
        r = client.post("/jobs", content=_spaces(BIG), headers=JSON)
        assert r.status_code == 422, r.text  # 50 MB of whitespace is not a JSON document
        after = _peak_rss_kib(pid)
        print(f"server peak RSS: {before} KiB before, {after} KiB after (+{after - before} KiB)")
        assert after - before > 50 * 1024


# -- ids no job or model can have -----------------------------------------------------------------

IMPOSSIBLE_IDS = [
    # (as sent in the path, as the server reads it)
    ("%00", "\x00"),
    ("a%00" + "b" * 30, "a\x00" + "b" * 30),
    ("a" * 10_000, "a" * 10_000),
    ("%C3%A9t%C3%A9", "été"),
    ("%E2%80%AE%F0%9F%98%80", "\u202e\U0001f600"),
    ("%2E%2E", ".."),
    ("A" * 32, "A" * 32),  # ids are lowercase hex
    ("a" * 31, "a" * 31),
    ("a" * 33, "a" * 33),
    ("g" * 32, "g" * 32),
    ("x'%20OR%20'1'='1", "x' OR '1'='1"),
    ("%FF%FE", "\ufffd\ufffd"),  # not UTF-8: the server reads replacement characters
]


def _shown(value: str) -> str:
    return value if len(value) <= 64 else value[:64] + "..."


def _id_requests(client: TestClient, raw: str) -> Iterator[tuple[str, httpx.Response]]:
    yield "job", client.get(f"/jobs/{raw}")
    yield "job", client.get(f"/jobs/{raw}/metrics", params={"names": "d_loss"})
    yield "job", client.get(f"/jobs/{raw}/events")
    yield "job", client.post(f"/jobs/{raw}/cancel")
    yield "model", client.get(f"/models/{raw}")
    yield "model", client.get(f"/models/{raw}/samples", params={"class": 1})
    yield "model", client.get(f"/models/{raw}/attention", params={"class": 1, "x": 0, "y": 0})
    yield "model", client.get(f"/models/{raw}/checkpoint")


def test_impossible_ids_are_404_like_missing_ones_and_never_reach_the_database(service):
    job_id = service.client.post("/jobs", json={"kind": "train", "config": {"steps": 5}}).json()
    for raw, read in IMPOSSIBLE_IDS:
        for kind, r in _id_requests(service.client, raw):
            assert r.status_code == 404, (raw[:80], r.request.url.path[:80], r.text[:300])
            assert r.json() == {"detail": f"{kind} {_shown(read)!r} not found"}, raw[:80]
        # The connection to the database was not broken: a normal request still works.
        assert service.client.get(f"/jobs/{job_id['id']}").status_code == 200
    assert service.client.get("/jobs").json()["total"] == 1


def test_a_path_that_is_not_an_id_route_is_a_plain_404(service):
    for path in ("/jobs/a%2F..", "/jobs/%00/%00", "/models/%00/nope", "/%00"):
        r = service.client.get(path)
        assert r.status_code == 404, (path, r.text)
    assert service.client.get("/jobs").status_code == 200


def test_an_impossible_id_without_credentials_is_still_a_401(embedded):
    client = TestClient(create_app(get_settings()))
    assert client.get("/jobs/%00").status_code == 401
    assert client.get("/models/%00").status_code == 401


def test_new_ids_match_the_id_pattern():
    assert all(ID_RE.fullmatch(new_id()) for _ in range(100))


def test_a_missing_well_formed_id_is_still_looked_up_and_404(service):
    missing = new_id()
    assert service.client.get(f"/jobs/{missing}").json() == {"detail": f"job {missing!r} not found"}
    r = service.client.get(f"/models/{missing}")
    assert r.status_code == 404 and r.json() == {"detail": f"model {missing!r} not found"}


# -- NUL bytes in query strings and headers -------------------------------------------------------


def test_nul_in_a_query_value_is_a_400_naming_the_parameter(service, make_model):
    job_id = service.client.post("/jobs", json={"kind": "train", "config": {"steps": 5}}).json()
    job_id = job_id["id"]
    model_id = make_model(None)["model_id"]
    cases = [
        (f"/jobs/{job_id}/metrics?names=d_%00loss", "names"),
        (f"/jobs/{job_id}/metrics?names=fid,%00", "names"),
        (f"/jobs/{job_id}/events?after=%00", "after"),
        (f"/models/{model_id}/samples?class=%00", "class"),
        (f"/models/{model_id}/samples?class=1&truncation=0.5%00", "truncation"),
        (f"/models/{model_id}/attention?class=%00&x=0&y=0", "class"),
        ("/models?job_id=%00", "job_id"),
        ("/jobs?state=queued%00", "state"),
        ("/jobs?kind=%00&limit=5", "kind"),
    ]
    for url, name in cases:
        r = service.client.get(url)
        assert r.status_code == 400, (url, r.text)
        assert r.json() == {"detail": f"{name}: contains a NUL byte"}, url
    r = service.client.get("/jobs?%00=1")
    assert r.status_code == 400
    assert r.json() == {"detail": "query parameter name '\\x00' contains a NUL byte"}

    # Nothing broke: the same queries without the NUL byte are answered.
    metrics = service.client.get(f"/jobs/{job_id}/metrics?names=d_loss")
    assert metrics.status_code == 200 and metrics.json()["series"] == {"d_loss": []}
    assert service.client.get("/models", params={"job_id": job_id}).json()["total"] == 0
    assert service.client.get("/jobs", params={"state": "queued"}).json()["total"] == 2


def test_nul_in_a_header_value_is_a_400_naming_the_header(service):
    body = {"kind": "train", "config": {"steps": 5}}
    for headers, name in [
        ({"Idempotency-Key": "key\x00"}, "idempotency-key"),
        ({"If-None-Match": '"\x00"'}, "if-none-match"),
        ({"Authorization": "Bearer \x00"}, "authorization"),
        ({"X-Anything": "\x00"}, "x-anything"),
    ]:
        r = service.client.post("/jobs", json=body, headers=headers)
        assert r.status_code == 400, (headers, r.text)
        assert r.json() == {"detail": f"{name}: contains a NUL byte"}
    assert _job_rows() == 0 and service.queued_messages() == 0
    r = service.client.post("/jobs", json=body, headers={"Idempotency-Key": "key"})
    assert r.status_code == 201, r.text
    assert re.fullmatch(r"[0-9a-f]{32}", r.json()["id"])


def test_nul_in_a_body_string_is_never_a_500(service, make_model):
    # A JSON string may carry \u0000; SQLite stores it, PostgreSQL cannot. Either way: a 4xx.
    client = TestClient(service.client.app, raise_server_exceptions=False)
    client.headers.update(service.client.headers)  # its token
    for body in [
        {"kind": "evaluate", "model_id": "\x00"},
        {"kind": "evaluate", "model_id": "a\x00" * 5, "samples": 1000},
        {"kind": "train", "config": {"steps": 5, "dataset": "digits\x00"}},
    ]:
        r = client.post("/jobs", json=body)
        assert 400 <= r.status_code < 500, (body, r.text)
        if service.mode == "distributed" and "model_id" in body:
            assert r.status_code == 400
            assert r.json()["detail"] == (
                "request body: a text value contains a NUL byte, which cannot be stored"
            )
    model_id = make_model(None)["model_id"]
    r = client.post("/jobs", json={"kind": "evaluate", "model_id": model_id, "samples": 1000})
    assert r.status_code == 201, r.text


def test_other_database_data_errors_stay_a_500(embedded, monkeypatch):
    from sqlalchemy.exc import DataError

    from api.routes import jobs as job_routes

    def broken(*args, **kwargs):
        raise DataError("SELECT 1", {}, ValueError("integer out of range"))

    monkeypatch.setattr(job_routes, "job_out", broken)
    client = TestClient(embedded.client.app, raise_server_exceptions=False)
    client.headers.update(embedded.client.headers)
    r = client.post("/jobs", json={"kind": "train", "config": {"steps": 3}})
    assert r.status_code == 500
    assert r.json()["detail"].startswith("internal error (DataError): (builtins.ValueError)")


def test_a_dataset_named_with_a_nul_byte_is_not_found(service):
    """#24: `/datasets/%00` was a 400 about the request body (PostgreSQL refused the lookup)."""
    for method in ("get", "delete"):
        r = getattr(service.client, method)("/datasets/%00")
        assert r.status_code == 404, (method, r.text)
        assert r.json()["detail"] == "dataset '\\x00' not found"
    assert service.client.get("/datasets").status_code == 200


def test_a_405_names_every_method_the_path_takes(embedded):
    """#24: OPTIONS /jobs answered `Allow: POST` (the first route's), though GET works too."""
    cases = {
        "/jobs": "GET, POST",
        "/sweeps": "GET, POST",
        "/jobs/" + "0" * 32: "GET",
        "/models/" + "0" * 32 + "/aliases/best": "PUT",
    }
    for path, allow in cases.items():
        for method in ("OPTIONS", "PATCH"):
            r = embedded.client.request(method, path)
            assert r.status_code == 405, (method, path, r.text)
            assert r.headers["allow"] == allow, (method, path, r.headers)
