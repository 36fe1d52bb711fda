"""Debian's headless Chromium driven by selenium through Debian's chromedriver.

Never downloads a browser or a driver: both paths are given, so Selenium Manager has
nothing to look up. Each browser gets a fresh profile folder and is quit by the test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Running as root needs --no-sandbox; the rest keeps Chromium from calling home.
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,1200",
)


def available() -> str | None:
    """None if the browser can run here, else why not."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} is missing: apt-get install chromium chromium-driver"
    return None


def chromium(profile: Path, log: Path) -> Any:
    os.environ["SE_OFFLINE"] = "true"  # belt and braces: Selenium Manager stays offline
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    # The console, for what the page's Content-Security-Policy refused (console_errors).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(log))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    return driver


def csp_violations(driver: Any) -> list[str]:
    """What the page's Content-Security-Policy refused since the last call (the console
    is read once: each call returns only what came after the previous one)."""
    return [
        str(entry["message"])
        for entry in driver.get_log("browser")
        if "Content Security Policy" in str(entry.get("message", ""))
    ]
