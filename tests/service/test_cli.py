"""The `sagan` command: its own subcommands and the core's, passed through."""

from __future__ import annotations

import subprocess
from pathlib import Path

from servicekit import SAGAN, service_env
from sqlalchemy import create_engine, inspect


def sagan(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SAGAN, *args], capture_output=True, text=True, timeout=120, env=env or service_env()
    )


def test_core_commands_are_forwarded_with_their_own_help() -> None:
    out = sagan("train", "--help")
    assert out.returncode == 0, out.stderr
    assert "--resolution" in out.stdout and "--batch-size" in out.stdout
    bad = sagan("pack")
    assert bad.returncode == 2 and "--resolution" in bad.stderr


def test_db_upgrade_then_reap_on_an_embedded_data_dir(tmp_path: Path) -> None:
    env = service_env(SAGAN_DATA_DIR=str(tmp_path))
    assert sagan("db", "upgrade", env=env).returncode == 0
    tables = inspect(create_engine(f"sqlite:///{tmp_path / 'sagan.db'}")).get_table_names()
    assert {"jobs", "metrics", "checkpoints", "models"} <= set(tables)
    out = sagan("reap", env=env)
    assert out.returncode == 0, out.stderr
    assert "requeued 0 job(s)" in out.stdout


def test_token_create_list_revoke_on_an_embedded_data_dir(tmp_path: Path) -> None:
    env = service_env(SAGAN_DATA_DIR=str(tmp_path))
    assert sagan("db", "upgrade", env=env).returncode == 0
    made = sagan("token", "create", "--user", "alice", "--note", "laptop", env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("sgn_") and len(token) > 40 and "shown only now" in made.stderr
    listed = sagan("token", "list", env=env)
    assert "alice" in listed.stdout and token[:10] in listed.stdout
    assert token not in listed.stdout and token not in (tmp_path / "sagan.db").read_bytes().decode(
        "latin-1"
    )  # only its hash is stored
    token_id = made.stderr.split()[1]
    assert sagan("token", "revoke", token_id, env=env).returncode == 0
    assert "(no tokens)" in sagan("token", "list", env=env).stdout
    bad = sagan("token", "create", "--user", "a b", env=env)
    assert bad.returncode == 2 and "user:" in bad.stderr


def test_without_auth_the_service_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    env = service_env(SAGAN_DATA_DIR=str(tmp_path), SAGAN_AUTH="false")
    out = sagan("api", "--host", "0.0.0.0", "--port", "1", env=env)
    assert out.returncode == 2
    assert "refusing to listen on 0.0.0.0 with SAGAN_AUTH=false" in out.stdout + out.stderr
