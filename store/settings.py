"""Service settings, read from SAGAN_* environment variables (one class, one prefix)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGAN_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Root of everything the embedded mode keeps.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/sagan.db"
    )
    broker_url: str | None = Field(
        None, description="Celery broker; default kombu filesystem:// under <data_dir>/broker"
    )
    storage: Literal["local", "s3"] = "local"
    storage_dir: Path | None = Field(
        None, description="Local storage root; default <data_dir>/storage"
    )
    s3_bucket: str = "sagan"
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    inception_weights: str | None = Field(
        None,
        description="Local path or storage key of torch-fidelity's Inception weights "
        "(weights-inception-2015-12-05-6726825d.pth)",
    )
    train_queue: str = "train"
    keep_checkpoints: int = Field(
        3,
        description="Newest checkpoints kept per job, besides those a model points at; 0 keeps all",
    )
    heartbeat_seconds: float = 10.0
    stale_after_seconds: float = 300.0
    worker_device: str = "auto"
    sample_cache_size: int = 8
    max_samples_per_request: int = 256

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'sagan.db').resolve()}"

    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.data_dir / "storage").resolve()

    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    def is_embedded_broker(self) -> bool:
        return self.resolved_broker_url().startswith("filesystem://")


@lru_cache
def get_settings() -> Settings:
    return Settings()
