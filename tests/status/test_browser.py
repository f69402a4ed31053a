"""The status page in a real browser: Debian's headless Chromium, driven by Selenium through Debian's
chromedriver, against the monitor on the bundled simulator, with basic auth on (no browser download)."""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import bcrypt
import pytest

from monitor.service import Running, Service
from monitor.simulator.fleet import Rates
from monitor.simulator.server import SimulatorSettings, running_simulator
from monitor.status.conditions import Condition
from monitor.status.history import day_date, day_of
from monitor.status.store import DayIncrement, HistoryBatch
from tests.status.stores import sqlite_history
from tests.test_service import TOKEN, make_config, until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
USER, PASSWORD = "sre", "correct horse battery staple"
#: The test makes the deployment fail on the day this many days ago, and looks for that cell.
FAILED_DAYS_AGO = 17

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)) and not os.environ.get("CI"):
    pytest.skip(
        "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service as DriverService  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


def browser(profile: Path) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # This machine's network is closed: without these, Chromium waits on connections it will never get.
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=DriverService(executable_path=CHROMEDRIVER))


def severe(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def browse(base: str, rid: str, failed_day: str, shots: Path, profile: Path) -> dict[str, Any]:
    """Everything the browser does (blocking, so the test runs it in a worker thread)."""
    driver = browser(profile)
    try:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        driver.get(base + "/")
        wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "li.tile")) == 12)
        fleet = {
            "title": driver.title,
            "tiles": len(driver.find_elements(By.CSS_SELECTOR, "li.tile")),
            "feed": driver.find_element(By.CSS_SELECTOR, 'link[rel="alternate"]').get_attribute("type"),
            "errors": severe(driver),
        }
        driver.save_screenshot(str(shots / "fleet.png"))

        driver.get(f"{base}/deployments/{rid}")
        cell = driver.find_element(By.CSS_SELECTOR, f'li.cell[data-day="{failed_day}"]')
        cells = driver.find_elements(By.CSS_SELECTOR, "ol.bar li.cell")
        failed_cells = [
            c.get_attribute("data-day") for c in cells if c.get_attribute("data-condition") == "failed"
        ]
        # Keyboard: focusing the day shows its tooltip with the time spent in each condition.
        driver.execute_script("arguments[0].focus()", cell)
        tip = cell.find_element(By.CSS_SELECTOR, ".tip")
        wait_for(tip.is_displayed)
        stamp = driver.find_element(By.CSS_SELECTOR, "time[datetime]")
        deployment = {
            "cells": len(cells),
            "failed": failed_cells,
            "cell_index": cells.index(cell),
            "tip": tip.text,
            "localised": stamp.text != stamp.get_attribute("title"),
            "errors": severe(driver),
        }
        driver.execute_script("document.activeElement.blur()")
        driver.set_window_size(1400, 2200)
        driver.save_screenshot(str(shots / "deployment.png"))
        return {"fleet": fleet, "deployment": deployment}
    finally:
        driver.quit()


@pytest.mark.slow
async def test_fleet_and_deployment_pages_in_chromium(tmp_path: Path) -> None:
    """With basic auth on, Chromium loads the fleet page (12 tiles, an Atom link) and a deployment page
    whose 90-day bar shows the FAILED day the test put in the history, with no console errors; screenshots
    of both pages are saved."""
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots in {shots}")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    settings = SimulatorSettings(size=12, seed=7, rates=Rates(), tokens=(TOKEN,))
    async with running_simulator(settings) as sim:
        rids = list(sim.fleet.rids[:12])
        rid = rids[0]
        config = make_config(
            sim, rids, tmp_path, server={"listen": "127.0.0.1:0", "basic_auth": {USER: hashed}}
        )
        today = day_of(time.time())
        async with sqlite_history(config.state.path) as seeded:
            day = today - FAILED_DAYS_AGO
            await seeded.write(
                HistoryBatch(
                    days=(
                        DayIncrement(rid, day - 1, {Condition.UP: 86_400_000}),
                        DayIncrement(rid, day, {Condition.UP: 80_000_000, Condition.FAILED: 6_400_000}),
                        DayIncrement(rid, day + 1, {Condition.UP: 86_400_000}),
                    )
                )
            )
        async with anyio.create_task_group() as tg:
            running: Running = await tg.start(Service(config).run)
            await until(running.scheduler.first_round_done.is_set)
            base = f"http://127.0.0.1:{running.port}"
            async with aiohttp.ClientSession() as session, session.get(base + "/") as refused:
                assert refused.status == 401
            seen = await anyio.to_thread.run_sync(
                browse, base, rid, day_date(day).isoformat(), shots, tmp_path / "profile"
            )
            tg.cancel_scope.cancel()
    fleet, deployment = seen["fleet"], seen["deployment"]
    assert fleet["title"].startswith("Fleet")
    assert fleet["tiles"] == 12
    assert fleet["feed"] == "application/atom+xml"
    assert fleet["errors"] == []
    assert deployment["cells"] == 90
    assert deployment["failed"] == [day_date(day).isoformat()]
    assert deployment["cell_index"] == 89 - FAILED_DAYS_AGO
    assert "Failed: 1 h 46 min" in deployment["tip"]
    assert deployment["localised"]
    assert deployment["errors"] == []
    for name in ("fleet.png", "deployment.png"):
        assert (shots / name).stat().st_size > 10_000
    if os.environ.get("STATUS_SCREENSHOTS"):
        shutil.copytree(shots, os.environ["STATUS_SCREENSHOTS"], dirs_exist_ok=True)
