"""API fixtures: a TestClient over the embedded (SQLite, filesystem broker, local storage) or the
distributed (PostgreSQL, Redis, moto S3) backends, and a tiny real checkpoint to register."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(autouse=True)
def _evaluations_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API refuses IS/FID jobs where workers cannot get Inception weights (#26); most API
    tests are about other things, so they run as an operator who allowed the download
    (test_api_evaluation_weights.py holds the refusal). No worker runs here: nothing downloads."""
    monkeypatch.setenv("SAGAN_INCEPTION_DOWNLOAD", "true")


@dataclass
class Service:
    mode: str  # embedded | distributed
    client: TestClient  # its requests carry user "local"'s token
    data_dir: Path
    queued_messages: Callable[[], int]  # task messages waiting in the broker's train queue
    tokens: dict[str, str] = field(default_factory=dict)

    def as_user(self, user: str, admin: bool = False) -> dict[str, str]:
        """Headers of a request made with a (new, cached) token of `user`."""
        key = f"{user}:{admin}"
        if key not in self.tokens:
            self.tokens[key] = user_token(user, admin=admin)
        return {"Authorization": f"Bearer {self.tokens[key]}"}


def user_token(user: str, admin: bool = False) -> str:
    """A real API token in the service's database (as `sagan token create` makes them)."""
    from store.db import session_scope
    from store.settings import get_settings
    from store.tokens import create_token

    with session_scope(get_settings()) as session:
        return create_token(session, user, admin=admin, note="test")[1]


def _client(app, user: str = "local") -> TestClient:  # noqa: ANN001
    client = TestClient(app)
    client.headers["Authorization"] = f"Bearer {user_token(user)}"
    return client


def _embedded(data_dir: Path) -> Service:
    from api.app import create_app
    from store.migrate import upgrade
    from store.settings import get_settings

    upgrade(get_settings().resolved_database_url())
    queue_dir = data_dir / "broker" / "queue"
    # No worker runs beside these tests: readiness is about the backends here.
    settings = get_settings().model_copy(update={"ready_requires_worker": False})
    return Service(
        "embedded",
        _client(create_app(settings)),
        data_dir,
        lambda: len(list(queue_dir.glob("*.msg"))) if queue_dir.is_dir() else 0,
    )


def _distributed(env: dict[str, str]) -> Service:
    import redis

    from api.app import create_app

    def llen() -> int:
        client = redis.Redis.from_url(env["SAGAN_BROKER_URL"])
        try:
            return int(client.llen("train"))
        finally:
            client.close()

    from store.migrate import upgrade
    from store.settings import get_settings

    upgrade(get_settings().resolved_database_url())
    return Service("distributed", _client(create_app()), Path(env["SAGAN_DATA_DIR"]), llen)


@pytest.fixture(params=["embedded", "distributed"])
def service(request: pytest.FixtureRequest) -> Service:
    """The API over each deployment's backends in turn."""
    if request.param == "embedded":
        return _embedded(request.getfixturevalue("embedded_env"))
    return _distributed(request.getfixturevalue("distributed_env"))


@pytest.fixture
def embedded(embedded_env: Path) -> Service:
    """The API over the embedded backends only, for behaviour that does not depend on them."""
    return _embedded(embedded_env)


DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint in the core's format: an untrained tiny 32px, 10-class generator."""
    import torch

    from sagan_core.checkpoint import build_generator, save_checkpoint
    from sagan_core.config import TrainConfig

    torch.manual_seed(0)
    cfg = TrainConfig.from_dict({"dataset": "digits", "resolution": 32, "steps": 2}).validate()
    cfg = cfg.resolved()
    G = build_generator(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(
        path, config=cfg.to_dict(), G_ema=G.state_dict(), class_names=list(DIGIT_NAMES)
    )


@pytest.fixture
def make_model() -> Callable[..., dict]:
    """make_model(checkpoint_path_or_None, owner=..., step=...) -> ids, see register_model."""
    return register_model


def register_model(checkpoint: Path | None, owner: str = "local", step: int = 2) -> dict:
    """A job row with `checkpoint` uploaded to storage and registered: its latest+best models.

    With checkpoint None only the rows are written (for tests that never read the file).
    """
    from store import jobs
    from store.checkpoints import checkpoint_key, register_checkpoint
    from store.db import session_scope
    from store.settings import get_settings
    from store.storage import storage_from_settings

    with session_scope(get_settings()) as session:
        job, _ = jobs.create_job(
            session,
            owner=owner,
            kind="train",
            config={"dataset": "digits", "resolution": 32, "steps": step, "batch_size": 64},
            total_steps=step,
        )
        key = checkpoint_key(job.id, step)
        size = storage_from_settings(get_settings()).put_file(key, checkpoint) if checkpoint else 0
        _, models = register_checkpoint(
            session,
            job,
            step=step,
            key=key,
            size_bytes=size,
            tags={"latest", "best"},
            resolution=32,
            class_names=list(DIGIT_NAMES),
        )
        by_tag = {m.tag: m.id for m in models}
        return {
            "job_id": job.id,
            "model_id": by_tag["latest"],
            "best_id": by_tag["best"],
            "key": key,
        }
