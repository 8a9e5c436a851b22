"""A real embedded service (`sagan up`) and a real headless Chromium driving its pages.

Chromium and its driver are Debian's `chromium` and `chromium-driver` (installed by `make test`
through scripts/ensure-services.sh); selenium talks to them and never downloads a browser.
Screenshots go to $SAGAN_SCREENSHOTS (default: a pytest temporary directory); their paths are
printed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from browserkit import FINISHED, OTHER  # puts tests/service on the path
from servicekit import (
    AUTH,
    ProcessGroup,
    ServiceProcess,
    free_port,
    service_env,
    wait_healthy,
    wait_job,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@dataclass
class Service:
    base: str
    client: httpx.Client
    up: ServiceProcess
    finished: str  # a 40-step job (submitted at start)
    other: str  # a 20-step job to overlay on it
    data_dir: Path | None = None  # the service's SAGAN_DATA_DIR (its SQLite database)

    def wait_finished(self) -> None:
        for job_id in (self.finished, self.other):
            job = wait_job(self.client, job_id, ("succeeded", "failed", "cancelled"), 300, self.up)
            assert job["state"] == "succeeded", job


@pytest.fixture(scope="session")
def dashboard_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`sagan up` on a free port with the test admin token; two jobs start training at once."""
    tmp = tmp_path_factory.mktemp("dashboard-service")
    with ProcessGroup(tmp) as group:
        port = free_port()
        up = group.start(
            ["up", "--port", str(port), "--data-dir", str(tmp / "data")],
            service_env(OMP_NUM_THREADS="1"),  # beside a browser on 2 shared cores: 2-3x faster
            "up",
        )
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, up, timeout=120)
        with httpx.Client(base_url=base, timeout=60, headers=AUTH) as client:
            ids = []
            for config in (FINISHED, OTHER):
                r = client.post("/jobs", json={"kind": "train", "config": config})
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            yield Service(base, client, up, *ids, data_dir=tmp / "data")


@pytest.fixture(scope="session")
def browser():  # noqa: ANN201
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (make test installs them: "
            "apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,2000",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for failures
    driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("SAGAN_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def shoot(browser, screenshot_dir: Path, capsys: pytest.CaptureFixture) -> Callable[[str], Path]:  # noqa: ANN001
    """shoot(name) saves the page as <screenshot_dir>/<name>.png and prints the path."""

    def save(name: str) -> Path:
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, max(900, min(int(height) + 140, 4000)))
        time.sleep(0.3)  # a relayout (uPlot keeps its width; the page only grows)
        path = screenshot_dir / f"{name}.png"
        assert browser.save_screenshot(str(path)), path
        with capsys.disabled():
            print(f"\nscreenshot: {path}")
        return path

    return save
