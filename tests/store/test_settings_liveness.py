"""Settings that cannot work are refused at start, naming what is wrong (#24: a stale window shorter
than the heartbeat was accepted, and then healthy jobs were taken from their workers until they
failed as "crashing their worker")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from store.settings import Settings

SAGAN = str(Path(sys.executable).with_name("sagan"))


@pytest.mark.parametrize(
    ("beat", "stale", "says"),
    [
        (10, 5, "SAGAN_STALE_AFTER_SECONDS (5) must be at least twice SAGAN_HEARTBEAT_SECONDS"),
        (10, 15, "SAGAN_STALE_AFTER_SECONDS (15) must be at least twice"),
        (-1, 60, "SAGAN_HEARTBEAT_SECONDS must be above 0 (got -1)"),
        (0, 60, "SAGAN_HEARTBEAT_SECONDS must be above 0 (got 0)"),
        (10, -60, "SAGAN_STALE_AFTER_SECONDS (-60) must be at least twice"),
    ],
)
def test_a_liveness_window_that_would_take_healthy_jobs_is_refused(
    beat: float, stale: float, says: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(heartbeat_seconds=beat, stale_after_seconds=stale)
    assert says in str(refused.value)


def test_the_defaults_and_a_tight_test_window_are_accepted() -> None:
    assert Settings().stale_after_seconds == 60
    assert Settings(heartbeat_seconds=0.5, stale_after_seconds=1).stale_after_seconds == 1


def test_a_service_command_with_such_settings_stops_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SAGAN_DATA_DIR": str(tmp_path),
           "SAGAN_HEARTBEAT_SECONDS": "10", "SAGAN_STALE_AFTER_SECONDS": "5"}  # fmt: skip
    out = subprocess.run([SAGAN, "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: settings: SAGAN_STALE_AFTER_SECONDS (5) must be at least")
    assert "Traceback" not in out.stderr
