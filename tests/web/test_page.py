"""The node page in a real browser (Debian's headless Chromium, driven by selenium)
against a real ``pxeserver serve`` with nodes in several states: what a person sees."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..support import browser
from ..support.browser import csp_violations
from ..support.server import ServerProcess
from ..support.settings import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser.available() is not None, reason=str(browser.available())),
]

ARTIFACTS = REPO / "test-artifacts"
TOKEN = "page-test-token"
READY, BOOTING, CONFIGURED, IGNITED, NOMATCH, GOES_LOST, NEW = (
    f"52:54:00:0a:00:{i:02x}" for i in range(1, 8)
)
SETTINGS: dict[str, Any] = {
    "server": {"api_token": TOKEN},
    "cluster": {"heartbeat_ttl": 5, "fleet_metadata": {"region": "lab"}},
    "profiles": {
        "coreos": {
            "kernel": "coreos/coreos_production_pxe.vmlinuz",
            "initrd": ["coreos/coreos_production_pxe_image.cpio.gz"],
            "args": ["coreos.autologin", "console=ttyS0"],
            "cloud_config": "coreos.yaml.j2",
        },
        "flatcar": {
            "kernel": "flatcar/current/flatcar_production_pxe.vmlinuz",
            "initrd": ["flatcar/current/flatcar_production_pxe_image.cpio.gz"],
            "args": ["flatcar.first_boot=1"],
            "ignition": "flatcar.ign.j2",
        },
        "coreos-disk": {  # no group selects it: an operator assigns it
            "kernel": "coreos/coreos_production_pxe.vmlinuz",
            "cloud_config": "coreos.yaml.j2",
            "install": "disk",
        },
    },
    # No default group: a machine of another architecture matches nothing and stays
    # "discovered", and explain says why.
    "groups": [
        {"name": "x86-rack", "profile": "coreos", "selectors": {"arch": "x86_64"}},
        {"name": "arm-rack", "profile": "flatcar", "selectors": {"arch": "arm64"}},
    ],
}


def token_of(server: ServerProcess, mac: str) -> str:
    _, _, body = server.get(f"/cloud-config?mac={mac}")
    return body.decode().split("Authorization: Bearer ")[1].split('"')[0]


def phone(server: ServerProcess, mac: str, what: str, token: str) -> None:
    status, _, body = server.request(
        "POST", f"/api/v1/nodes/{mac}/{what}", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200, body


class Heartbeats(threading.Thread):
    """Keeps one node ready the way its heartbeat timer would."""

    def __init__(self, server: ServerProcess, mac: str, token: str) -> None:
        super().__init__(daemon=True)
        self.server, self.mac, self.token = server, mac, token
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            self.server.request(
                "POST",
                f"/api/v1/nodes/{self.mac}/heartbeat",
                headers={"Authorization": f"Bearer {self.token}"},
            )


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[ServerProcess, Heartbeats]]:
    server = ServerProcess(tmp_path, settings=SETTINGS, args=["--no-dhcp", "--no-tftp"]).start()
    beats = None
    try:
        x86 = "&arch=x86_64&platform=efi"
        server.get(f"/ipxe?mac={GOES_LOST}{x86}")
        phone(server, GOES_LOST, "ready", token_of(server, GOES_LOST))  # then silence: lost
        server.get(f"/ipxe?mac={READY}{x86}")
        time.sleep(0.3)  # so that the timeline shows steps that took a while
        token = token_of(server, READY)
        time.sleep(0.2)
        phone(server, READY, "ready", token)
        beats = Heartbeats(server, READY, token)
        beats.start()
        server.get(f"/ipxe?mac={BOOTING}{x86}")
        server.get(f"/ipxe?mac={CONFIGURED}&arch=x86_64&platform=pcbios")
        server.get(f"/cloud-config?mac={CONFIGURED}")
        server.get(f"/ipxe?mac={IGNITED}&arch=arm64&platform=efi")
        assert server.get(f"/ignition?mac={IGNITED}")[0] == 200
        assert server.get(f"/ipxe?mac={NOMATCH}&arch=i386")[0] == 404
        yield server, beats
    finally:
        if beats is not None:
            beats.stopping.set()
            beats.join(timeout=5)
        server.stop()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    driver = browser.chromium(tmp_path / "chromium-profile", tmp_path / "chromedriver.log")
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, what: str, check: Any, timeout: float = 15) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page redraws its parts every two seconds: an element found a moment ago may be
    # gone; look again.
    return WebDriverWait(
        driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: check(d), message=f"the page never showed {what}")


def row(driver: Any, mac: str) -> Any:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f'tr[data-mac="{mac}"]')
    return found[0] if found else None


def cell(driver: Any, mac: str, column: str) -> str:
    from selenium.webdriver.common.by import By

    return str(row(driver, mac).find_element(By.CSS_SELECTOR, f"td.{column}").text)


def open_node(driver: Any, mac: str) -> None:
    """Click the node's row until its detail is open. The table is redrawn every two
    seconds: a row found a moment ago may be gone, or another row may be where it was."""

    def opened(d: Any) -> bool:
        if mac in text(d, "#d-title"):
            return True
        found = row(d, mac)
        if found is not None:
            found.click()
        return mac in text(d, "#d-title")

    wait(driver, f"the detail of {mac}", opened)


def state_of(driver: Any, mac: str) -> str | None:
    from selenium.webdriver.common.by import By

    r = row(driver, mac)
    return r.find_element(By.CSS_SELECTOR, "td.state").text if r is not None else None


def text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def steps_of(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    items = driver.find_elements(By.CSS_SELECTOR, "#d-timeline li")
    return [str(li.get_attribute("data-kind")) for li in items]


def test_node_page(lab: tuple[ServerProcess, Heartbeats], page: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    server, _ = lab
    page.get(server.url + "/")
    assert page.title == "pxeserver — nodes"

    # The table shows every node in its state; the silent one turns lost on its own.
    wait(page, "six nodes", lambda d: len(d.find_elements(By.CSS_SELECTOR, "tbody tr")) == 6)
    assert state_of(page, READY) == "ready"
    assert state_of(page, BOOTING) == "booting"
    assert state_of(page, CONFIGURED) == "configured"
    assert state_of(page, IGNITED) == "configured"
    assert state_of(page, NOMATCH) == "discovered"
    wait(page, "the silent node as lost", lambda d: state_of(d, GOES_LOST) == "lost", 40)
    wait(page, "the ready row's hostname and profile", lambda d: (
        cell(d, READY, "hostname").startswith("node-") and cell(d, READY, "profile") == "coreos"
    ))  # fmt: skip
    assert "live" in text(page, "#live")

    # A machine that boots now appears without a reload, then changes state live.
    server.get(f"/ipxe?mac={NEW}&arch=x86_64")
    wait(page, "the new machine's row", lambda d: state_of(d, NEW) == "booting")
    server.get(f"/cloud-config?mac={NEW}")
    wait(page, "the new machine configured", lambda d: state_of(d, NEW) == "configured")

    # Filters.
    Select(page.find_element(By.ID, "f-state")).select_by_value("configured")
    wait(page, "only configured rows", lambda d: text(d, "#shown").startswith("3 of 7"))
    Select(page.find_element(By.ID, "f-state")).select_by_value("")
    page.find_element(By.ID, "f-text").send_keys(":0a:00:05")
    wait(page, "the search result", lambda d: text(d, "#shown").startswith("1 of 7"))
    page.find_element(By.ID, "f-text").clear()
    page.execute_script("document.getElementById('f-text').dispatchEvent(new Event('input'))")

    # A stuck machine says where it stopped.
    open_node(page, BOOTING)
    wait(
        page,
        "where the booting node stopped",
        lambda d: "waiting for its cloud-config" in text(d, "#d-where"),
    )
    kinds = [
        li.get_attribute("data-kind")
        for li in page.find_elements(By.CSS_SELECTOR, "#d-timeline li")
    ]
    assert kinds == ["ipxe"]

    # The machine that matches nothing: explain says why, group by group.
    open_node(page, NOMATCH)
    wait(page, "the no-match explanation", lambda d: "no group selects" in text(d, "#x-reason"))
    verdicts = text(page, "#x-groups")
    assert "arch is 'i386', wants x86_64" in verdicts and "wants arm64" in verdicts

    # The ready node: its timeline with the time each step took, and explain.
    open_node(page, READY)

    def timeline(d: Any) -> list[tuple[str, str, str]] | None:
        """(kind, time taken, text) of each step, read at once: the panel is redrawn."""
        # The first four; on a loaded machine a late heartbeat may add "lost" and more.
        items = d.find_elements(By.CSS_SELECTOR, "#d-timeline li")[:4]
        if len(items) != 4:
            return None
        return [(str(li.get_attribute("data-kind")), li.find_element(By.CSS_SELECTOR, ".took")
                 .text, li.text) for li in items]  # fmt: skip

    steps = wait(page, "the ready node's timeline", timeline)
    assert [kind for kind, _, _ in steps] == ["ipxe", "cloud-config", "ready", "heartbeat"]
    # Each step's bar is as wide as the time it took: styled from the script, which the
    # page's Content-Security-Policy allows (it refuses style attributes).
    widths = [b.size["width"] for b in page.find_elements(By.CSS_SELECTOR, "#d-timeline .bar")]
    assert max(widths) > 10, widths
    took = steps[1][1]
    assert took.endswith(" ms") or took.endswith(" s"), took  # iPXE → cloud-config
    assert "×" in steps[3][2]  # heartbeats, counted
    assert "Ready" in text(page, "#d-where")
    wait(page, "explain", lambda d: "x86-rack" in text(d, "#x-reason"))
    assert "chosen: all 1 selectors match (arch=x86_64)" in text(page, "#x-groups")
    ipxe = text(page, "#x-ipxe")
    assert "kernel " in ipxe and "initrd=coreos_production_pxe_image.cpio.gz" in ipxe  # efi
    page.find_element(By.CSS_SELECTOR, "input[name=platform][value=pcbios]").click()
    wait(page, "the BIOS script", lambda d: "initrd=" not in text(d, "#x-ipxe").split("\n")[3])
    page.find_element(By.CSS_SELECTOR, "#x-cloud-box summary").click()
    assert "<node token: hidden" in text(page, "#x-cloud")

    # Read-only until the token is given; then changes go through the API.
    assert not page.find_element(By.ID, "d-edit").is_displayed()
    assert text(page, "#mode") == "read-only"
    page.find_element(By.ID, "token").send_keys(TOKEN)
    page.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(page, "the edit form", lambda d: d.find_element(By.ID, "d-edit").is_displayed())
    page.find_element(By.ID, "e-label").send_keys("rack=r7")
    page.find_element(By.CSS_SELECTOR, "#edit-form button[type=submit]").click()
    wait(page, "the new label in the table", lambda d: "rack=r7" in row(d, READY).text)
    node = server.json(f"/api/v1/nodes/{READY}")
    assert node["labels"] == {"rack": "r7"}

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "node-page.png"
    page.execute_script("window.scrollTo(0, 0)")
    page.save_screenshot(str(shot))
    assert shot.stat().st_size > 20000
    if __import__("os").environ.get("PXESERVER_UPDATE_DOCS"):
        shutil.copy(shot, REPO / "docs" / "node-page.png")

    # Nothing the page does breaks its own Content-Security-Policy; the control: a style
    # attribute set from a script is refused, and the console says so.
    assert csp_violations(page) == []
    page.execute_script("document.body.setAttribute('style', 'color: red')")
    assert wait(page, "the refused style attribute", csp_violations)

    # A node whose disk holds its profile: the page says so and can have it reinstall.
    assert not page.find_element(By.ID, "e-reinstall").is_displayed()  # RAM profile
    auth = {"Authorization": f"Bearer {TOKEN}"}
    server.request("PATCH", f"/api/v1/nodes/{READY}", {"profile": "coreos-disk"}, auth)
    phone(server, READY, "ready", token_of(server, READY))
    wait(page, "what is on its disk", lambda d: "coreos-disk since" in text(d, "#d-facts"))
    wait(
        page, "the reinstall button", lambda d: d.find_element(By.ID, "e-reinstall").is_displayed()
    )
    page.find_element(By.ID, "e-reinstall").click()
    page.switch_to.alert.accept()
    wait(page, "the reinstall done", lambda d: "next boot reinstalls" in text(d, "#e-result"))
    assert server.json(f"/api/v1/nodes/{READY}")["installed"] is None
    wait(page, "the record cleared", lambda d: "(network boot)" in text(d, "#d-facts"))


@pytest.mark.parametrize(
    ("server", "says"),
    [
        ({}, "changes allowed from this machine only"),
        ({"allow_unauthenticated_writes": True}, "changes open to anyone"),
    ],
)
def test_the_page_says_who_may_change_nodes_without_a_token(
    tmp_path: Path, page: Any, server: dict[str, Any], says: str
) -> None:
    from selenium.webdriver.common.by import By

    settings = {**SETTINGS, "server": server}
    served = ServerProcess(tmp_path, settings=settings, args=["--no-dhcp", "--no-tftp"]).start()
    try:
        served.get(f"/ipxe?mac={READY}&arch=x86_64")
        page.get(served.url + "/")
        wait(page, says, lambda d: says in text(d, "#mode"))
        open_node(page, READY)
        wait(page, "the edit form", lambda d: d.find_element(By.ID, "d-edit").is_displayed())
        assert csp_violations(page) == []
    finally:
        served.stop()
