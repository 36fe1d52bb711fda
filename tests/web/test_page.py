"""The node page in a real browser (Debian's headless Chromium, driven by selenium)
against a real ``pxeserver serve`` with nodes in several states: what a person sees."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxeserver.store.etcd import EtcdStore
from pxeserver.store.sqlite import SQLiteStore

from ..support import browser, fleet
from ..support.browser import csp_violations
from ..support.etcd import etcd_prefix
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


READ_ONLY = "read-only: type the API token to change nodes"
WITH_TOKEN = "changes allowed with your token"
OPEN = "changes open to anyone: this server has no API token"
LOCAL = "changes allowed from this machine only: this server has no API token"


def picture(driver: Any, name: str) -> Path:
    """The window as a PNG in test-artifacts/, and in docs/ with PXESERVER_UPDATE_DOCS=1."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    ActionChains(driver).move_to_element(driver.find_element(By.TAG_NAME, "h1")).perform()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 20000
    if os.environ.get("PXESERVER_UPDATE_DOCS"):
        shutil.copy(shot, REPO / "docs" / name)
    return shot


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
    wait(
        page, "only configured rows", lambda d: text(d, "#shown").startswith("3 matching (7 nodes)")
    )
    Select(page.find_element(By.ID, "f-state")).select_by_value("")
    page.find_element(By.ID, "f-text").send_keys(":0a:00:05")
    wait(page, "the search result", lambda d: text(d, "#shown").startswith("1 matching (7 nodes)"))
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
    assert text(page, "#mode") == READ_ONLY
    page.find_element(By.ID, "token").send_keys(TOKEN)
    page.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(page, "the edit form", lambda d: d.find_element(By.ID, "d-edit").is_displayed())
    page.find_element(By.ID, "e-label").send_keys("rack=r7")
    page.find_element(By.CSS_SELECTOR, "#edit-form button[type=submit]").click()
    wait(page, "the new label in the table", lambda d: "rack=r7" in row(d, READY).text)
    node = server.json(f"/api/v1/nodes/{READY}")
    assert node["labels"] == {"rack": "r7"}

    assert text(page, "#mode") == WITH_TOKEN
    page.execute_script("window.scrollTo(0, 0)")
    picture(page, "node-page.png")

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


# -- who may change nodes, said at once; a small and a large fleet -----------------------

FLEET_SETTINGS: dict[str, Any] = {
    # The fleet's times lie within the last hour: nothing may turn lost during the test.
    "cluster": {"heartbeat_ttl": 86400, "boot_timeout": 86400},
    "profiles": {k: SETTINGS["profiles"][k] for k in ("coreos", "flatcar")},
    "groups": SETTINGS["groups"],
}
# One node in each state: fleet indices 0 (ready), 14 (booting), 16 (configured),
# 17 (lost), 19 (discovered).
FIVE = (0, 14, 16, 17, 19)


def fleet_server(
    workdir: Path,
    count: int | list[int],
    *,
    token: str | None,
    store: str = "sqlite",
    etcd: Any = None,
) -> tuple[ServerProcess, float]:
    """A server over a registry that already holds fleet nodes (all ``count`` of them,
    or those indices), written straight into its store; and the time they were made at."""
    settings = {**FLEET_SETTINGS, "paths": {"data_dir": str(workdir / "var")}}
    if token:
        settings["server"] = {"api_token": token}
    indices = list(range(count)) if isinstance(count, int) else count
    now = time.time()
    if store == "etcd":
        prefix = etcd_prefix()
        settings["store"] = {
            "backend": "etcd",
            "etcd_endpoints": [etcd.client_url],
            "etcd_prefix": prefix,
        }
        target: Any = EtcdStore((etcd.client_url,), prefix, timeout=10.0)
    else:
        (workdir / "var").mkdir(parents=True)
        target = SQLiteStore(workdir / "var" / "pxeserver.db")
    try:
        for i in indices:  # a few: one by one; many: fleet.register's threads
            if len(indices) <= 20:
                node = fleet.node_of(i, now)
                target.create(node, lambda _n, name=node.hostname: name)
        if len(indices) > 20:
            fleet.register(target, len(indices), now)
    finally:
        target.close()
    server = ServerProcess(workdir, settings=settings, args=["--no-dhcp", "--no-tftp"])
    return server.start(), now


def scroll_to(driver: Any, mac: str, where: str) -> None:
    """Bring the node's row into the window (in one step: the table is redrawn)."""
    driver.execute_script(
        "document.querySelector(`tr[data-mac='${arguments[0]}']`)"
        ".scrollIntoView({block: arguments[1]})",
        mac,
        where,
    )


def every(driver: Any, css: str, attribute: str | None = None) -> list[str]:
    """The text (or an attribute) of every element of ``css``, read in one step: the
    table and the chips are redrawn at every refresh."""
    return list(driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map((e) => arguments[1] ? e.getAttribute(arguments[1]) : e.textContent)",
        css,
        attribute,
    ))  # fmt: skip


def rows_of(driver: Any) -> list[str]:
    return every(driver, "#node-table tbody tr", "data-mac")


def banner_without_scripts(driver: Any, url: str) -> str:
    """The banner's words as the HTML alone says them: the script and the API blocked."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/ui/app.js", "*/api/v1/*"]})
    try:
        driver.get(url + "/")
        assert text(driver, "#shown") == ""  # no script ran: nothing was filled in
        return text(driver, "#mode")
    finally:
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})


@pytest.mark.parametrize(
    ("token", "store", "words"),
    [(None, "sqlite", LOCAL), (TOKEN, "etcd", READ_ONLY)],
    ids=["no-token-sqlite", "token-etcd"],
)
def test_the_first_paint_says_who_may_change_nodes(
    tmp_path: Path,
    page: Any,
    request: pytest.FixtureRequest,
    token: str | None,
    store: str,
    words: str,
) -> None:
    from selenium.webdriver.common.by import By

    etcd = request.getfixturevalue("etcd") if store == "etcd" else None
    server, _ = fleet_server(tmp_path, list(FIVE), token=token, store=store, etcd=etcd)
    try:
        assert banner_without_scripts(page, server.url) == words
        page.get(server.url + "/")
        assert text(page, "#mode") == words  # at once, before the API has answered
        wait(page, "five nodes", lambda d: len(rows_of(d)) == 5)
        assert text(page, "#mode") == words  # and the script kept it
        assert rows_of(page) == [fleet.mac_of(i).value for i in FIVE]
        assert every(page, "tbody td.state") == [
            "ready",
            "booting",
            "configured",
            "lost",
            "discovered",
        ]
        open_node(page, fleet.mac_of(17).value)  # the lost one: where it stopped
        wait(page, "why it is lost", lambda d: "silent for 95 s" in text(d, "#d-where"))
        edit = page.find_element(By.ID, "d-edit")
        if token is None:
            assert edit.is_displayed()  # changes are open, and the page offers them
            picture(page, "node-page-5.png")
        else:
            assert not edit.is_displayed()
            page.find_element(By.ID, "token").send_keys(TOKEN)
            page.find_element(By.CSS_SELECTOR, "#token-form button").click()
            wait(page, "the words for a token", lambda d: text(d, "#mode") == WITH_TOKEN)
            assert edit.is_displayed()
    finally:
        server.stop()


def in_window(driver: Any, css: str) -> list[str]:
    """The elements of ``css`` not wholly inside the window; and whether the table sticks out
    of its box."""
    return list(driver.execute_script(
        """
        const out = [];
        const w = window.innerWidth, h = window.innerHeight;  // 1 px for rounding
        for (const e of document.querySelectorAll(arguments[0])) {
          const r = e.getBoundingClientRect();
          if (r.width === 0 || r.left < -1 || r.top < -1 || r.right > w + 1 || r.bottom > h + 1) {
            out.push(e.textContent.trim().slice(0, 40) + " " + JSON.stringify(r));
          }
        }
        const table = document.getElementById("node-table").getBoundingClientRect();
        const box = document.getElementById("nodes").getBoundingClientRect();
        if (table.right > box.right) out.push("the table is wider than its box");
        return out;
        """,
        css,
    ))  # fmt: skip


def test_ten_thousand_nodes(tmp_path: Path, page: Any) -> None:
    from selenium.webdriver.common.by import By

    server, now = fleet_server(tmp_path, 10_000, token=TOKEN)
    nodes = list(fleet.nodes(10_000, now))
    by_mac = sorted(n.mac.value for n in nodes)
    newest = [n.mac.value for n in sorted(nodes, key=lambda n: (-n.last_seen, n.mac.value))]
    oldest = [n.mac.value for n in sorted(nodes, key=lambda n: (n.last_seen, n.mac.value))]
    try:
        page.get(server.url + "/")
        assert text(page, "#mode") == READ_ONLY

        # The first page: 100 rows in MAC order, and the whole fleet in the summary.
        wait(page, "the first page", lambda d: rows_of(d) == by_mac[:100], 60)
        assert text(page, "#shown") == "rows 1–100 of 10,000 nodes · sorted by MAC, lowest first"
        chips = text(page, "#summary")
        for words in (
            "discovered 500",
            "booting 1,000",
            "configured 500",
            "ready 7,000",
            "lost 1,000",
        ):
            assert words in chips
        assert text(page, "#p-where") == "page 1 of 100"

        # Sorted by a click on a header, most recent first; a second click turns it round.
        heading = page.find_element(By.CSS_SELECTOR, 'th[data-sort="last_seen"]')
        heading.find_element(By.TAG_NAME, "button").click()
        wait(page, "the newest first", lambda d: rows_of(d) == newest[:100], 60)
        assert heading.get_attribute("aria-sort") == "descending"
        assert "sorted by last seen, most recent first" in text(page, "#shown")
        seen = every(page, "tbody td.last-seen", "data-at")
        assert seen == sorted(seen, reverse=True) and seen[0] > seen[-1]

        # Paging: the next page holds the next 100 of that order.
        page.find_element(By.ID, "p-next").click()
        wait(page, "the second page", lambda d: rows_of(d) == newest[100:200], 60)
        assert text(page, "#shown").startswith("rows 101–200 of 10,000 nodes")
        assert text(page, "#p-where") == "page 2 of 100"
        page.refresh()  # the view is kept in the address: a reload shows the same rows
        wait(page, "the second page again", lambda d: rows_of(d) == newest[100:200], 60)
        heading = page.find_element(By.CSS_SELECTOR, 'th[data-sort="last_seen"]')
        assert heading.get_attribute("aria-sort") == "descending"

        heading.find_element(By.TAG_NAME, "button").click()
        wait(page, "the oldest first", lambda d: rows_of(d) == oldest[:100], 60)
        assert heading.get_attribute("aria-sort") == "ascending"
        assert text(page, "#p-where") == "page 1 of 100"  # a new order starts at its top

        # 200 rows on a page; the last one, far down, opens its details in the window,
        # and the table keeps every column beside them, in a wide and a narrower window.
        from selenium.webdriver.support.ui import Select

        Select(page.find_element(By.ID, "p-size")).select_by_visible_text("200")
        wait(page, "200 rows", lambda d: rows_of(d) == oldest[:200], 60)
        low = oldest[199]
        scroll_to(page, low, "end")
        assert page.execute_script("return window.scrollY") > 3000  # far down the page
        open_node(page, low)
        for width in (1440, 1280):
            page.set_window_size(width, 1000)
            scroll_to(page, low, "end")
            assert in_window(page, "#detail") == [], width
            assert in_window(page, "#node-table thead th") == [], width
            assert in_window(page, f'tr[data-mac="{low}"] td') == [], width
        page.set_window_size(1440, 1200)

        # A new order from far down the page shows its first rows; then the picture for
        # the docs: the most recent first, one of them open.
        scroll_to(page, low, "end")
        heading.find_element(By.TAG_NAME, "button").click()
        wait(page, "the newest first again", lambda d: rows_of(d) == newest[:200], 60)
        assert in_window(page, f'tr[data-mac="{newest[0]}"] td') == []
        open_node(page, newest[1])
        wait(page, "its timeline", lambda d: len(steps_of(d)) == 6)
        wait(page, "its explanation", lambda d: "x86-rack" in text(d, "#x-reason"))
        picture(page, "node-page-10000.png")

        # The summary chips filter: the lost ones, 1,000 of them.
        page.execute_script("document.querySelector('#summary .chip[data-state=lost]').click()")
        wait(
            page,
            "the lost ones",
            lambda d: "of 1,000 matching (10,000 nodes)" in text(d, "#shown"),
            60,
        )
        states = every(page, "tbody td.state")
        assert len(states) == 200 and set(states) == {"lost"}
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("server", "says"),
    [
        ({}, LOCAL),
        ({"allow_unauthenticated_writes": True}, OPEN),
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
        assert text(page, "#mode") == says  # the first paint
        wait(page, says, lambda d: text(d, "#mode") == says)  # and the script kept it
        open_node(page, READY)
        wait(page, "the edit form", lambda d: d.find_element(By.ID, "d-edit").is_displayed())
        assert csp_violations(page) == []
    finally:
        served.stop()
