"""What the dashboard tests share: the jobs they train and how a page is opened."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "service"))
from servicekit import ADMIN_TOKEN  # noqa: E402

# Small digits jobs for a shared 2-core CPU: a log line every 2 steps, a grid every 10.
FINISHED = {
    "dataset": "digits", "resolution": 32, "preset": "tiny", "steps": 40, "batch_size": 8,
    "log_every": 2, "checkpoint_every": 20, "sample_every": 10,
}  # fmt: skip
OTHER = {**FINISHED, "steps": 20, "seed": 1}


def open_page(driver, base: str, fragment: str = "") -> None:  # noqa: ANN001
    """Load the dashboard with the token in localStorage, as a user who pasted it once."""
    driver.get(f"{base}/static/favicon.svg")  # same origin, nothing runs
    driver.execute_script(
        "localStorage.clear(); localStorage.setItem('sagan-token', arguments[0])", ADMIN_TOKEN
    )
    driver.get(f"{base}/?t={time.monotonic_ns()}{'#' + fragment if fragment else ''}")
