"""Store outage (issue 5, item 1), against a real etcd that the tests stop and start by PID.

While etcd is down, machines the registry knows boot with their own profile from the
local cache, their writes go to the journal, a machine never seen gets 503 with
Retry-After, and ProxyDHCP decides at once; when etcd is back the journal is replayed, and
the registry is checked against the history the test recorded. A hung etcd (SIGSTOP) makes
store calls fail within their deadline instead of hanging.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxeserver import daemon
from pxeserver.boot import BootService
from pxeserver.config import Settings
from pxeserver.dhcp import packets as dp
from pxeserver.dhcp.proxy import ProxyDhcp
from pxeserver.errors import StoreUnavailable
from pxeserver.model import MAC, EventKind, Machine, Node, State
from pxeserver.nodes.resilient import Replayer, ResilientRegistry
from pxeserver.store.etcd import EtcdStore
from pxeserver.web import create_app

from ..support.dhcp import exchange, golden
from ..support.etcd import EtcdMember, answers, wait_answers
from ..support.fakes import CountingStore
from ..support.net import wait_for
from ..support.settings import make_settings

pytestmark = pytest.mark.slow

KNOWN, NEW = 50, 50
OUTAGE_S = 5.0  # at least: long enough for the breaker and the replayer to back off
# What each profile's iPXE script has that no other profile's has.
MARKERS = {
    "coreos": "coreos.autologin",
    "debug": "rack=r1",
    "flatcar": "flatcar_production_pxe.vmlinuz",
}
STATE_OF = {
    "dhcp": State.DISCOVERED,
    "ipxe": State.BOOTING,
    "cloud-config": State.CONFIGURED,
    "ready": State.READY,
    "heartbeat": State.READY,
}


@pytest.fixture
def member(tmp_path: Path) -> Iterator[EtcdMember]:
    """An etcd of this test's own: stopping the session's would break other tests."""
    m = EtcdMember("outage", tmp_path / "etcd", tmp_path)
    m.start()
    wait_answers(m)
    yield m
    if m.proc is not None and m.proc.poll() is None:
        os.kill(m.proc.pid, signal.SIGCONT)  # in case a test left it stopped
    m.stop()


def outage_settings(tmp_path: Path, member: EtcdMember, timeout: float = 2.0) -> Settings:
    # No default group: a BIOS machine nobody assigned gets no ProxyDHCP offer, so the
    # test sees ProxyDHCP decide both ways while the store is down.
    return make_settings(tmp_path, {
        "store": {"backend": "etcd", "etcd_endpoints": [member.client_url], "timeout": timeout},
        "groups": [
            {"name": "racked", "profile": "debug", "selectors": {"rack": "r1"}},
            {"name": "uefi", "profile": "coreos", "selectors": {"platform": "efi"}},
        ],
    })  # fmt: skip


def known_mac(i: int) -> MAC:
    return MAC.parse(f"52:54:00:aa:00:{i:02x}")


def new_mac(i: int) -> MAC:
    return MAC.parse(f"52:54:00:bb:00:{i:02x}")


def expected_profile(i: int) -> str:
    return {0: "debug", 1: "flatcar"}.get(i % 5, "coreos")


def boot(client: Any, mac: MAC, token: str, profile: str) -> None:
    """One machine's boot as iPXE and the booted OS make it; every step must succeed."""
    r = client.get(f"/ipxe?mac={mac}&platform=efi&arch=x86_64")
    assert r.status_code == 200, (mac, r.status_code, r.text)
    for name, marker in MARKERS.items():
        assert (marker in r.text) == (name == profile), (mac, profile, r.text)
    r = client.get(f"/cloud-config?mac={mac}")
    assert r.status_code == 200, (mac, r.status_code, r.text)
    auth = {"Authorization": f"Bearer {token}"}
    for step in ("ready", "heartbeat"):
        r = client.post(f"/api/v1/nodes/{mac}/{step}", headers=auth)
        assert r.status_code == 200, (mac, step, r.status_code, r.text)


def check_dhcp_during_outage(
    proxy: ProxyDhcp, service: BootService, store: CountingStore
) -> list[MAC]:
    """ProxyDHCP answers known and new machines, and refuses one no group selects, without
    a single store call from its threads (the store is down: a call would fail or wait).

    Returns the MACs it saw (their sightings are journalled)."""
    bios = dp.parse(golden("bios-pxe-discover")).options
    uefi = dp.parse(golden("uefi-pxe-discover")).options
    port = proxy.ports["dhcp"]
    flatcar = known_mac(1)  # BIOS-booted, but assigned flatcar by an operator
    reply = exchange(port, dp.request_packet(flatcar, bios))
    assert reply is not None and reply.file == b"undionly.kpxe", "known node not offered"
    reply = exchange(port, dp.request_packet(new_mac(0), uefi))
    assert reply is not None and reply.file == b"snponly.efi", "new UEFI machine not offered"
    # A new BIOS machine no group selects: no answer, and no store call to decide it.
    ignored = proxy.counters["ignored"]
    proxy_sock_send(port, dp.request_packet(new_mac(1), bios))
    wait_for(lambda: proxy.counters["ignored"] > ignored, 5, "the refusal", interval=0.001)
    assert service.boot_refusal(Machine(new_mac(1), platform="pcbios")) is not None
    asked = {t: n for t, n in store.callers.items() if t.startswith("dhcp-")}
    assert not asked, f"ProxyDHCP asked the store: {asked}"
    return [flatcar, new_mac(0)]


def proxy_sock_send(port: int, packet: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(packet, ("127.0.0.1", port))


def test_known_machines_boot_through_an_etcd_outage_and_nothing_is_lost(
    tmp_path: Path, member: EtcdMember
) -> None:
    settings = outage_settings(tmp_path, member)
    (tmp_path / "tftproot").mkdir()
    first = daemon.make_service(settings)  # an HTTP worker running before the outage
    assert isinstance(first.registry, ResilientRegistry)
    web1 = create_app(settings, first).test_client()

    # -- 50 nodes registered while etcd is up -----------------------------------------
    history: dict[MAC, list[str]] = {}
    tokens: dict[MAC, str] = {}
    for i in range(KNOWN):
        mac = known_mac(i)
        assert web1.get(f"/ipxe?mac={mac}&platform=efi&arch=x86_64").status_code == 200
        if i % 5 == 0:
            first.set_node(mac, labels={"rack": "r1"})
        elif i % 5 == 1:
            first.set_node(mac, profile="flatcar")
        node = first.registry.get(mac)
        assert node is not None
        tokens[mac] = node.token
        boot(web1, mac, node.token, expected_profile(i))
        history[mac] = ["ipxe", "ipxe", "cloud-config", "ready", "heartbeat"]
    before = sum(len(h) for h in history.values())

    # -- etcd stopped by its PID ------------------------------------------------------
    assert member.proc is not None
    etcd_pid = member.proc.pid
    member.stop()
    down_at = time.monotonic()
    # The main process restarted during the outage, on the same data dir: ProxyDHCP,
    # the sightings writer and the replayer, and an HTTP worker of its own.
    counted = CountingStore(daemon.make_store(settings))
    main = daemon.make_service(settings, counted)
    assert isinstance(main.registry, ResilientRegistry)
    replayer = daemon.local_state(main)
    assert isinstance(replayer, Replayer)
    replayer.max_delay = 1.0  # the test waits for the replay; the daemon backs off to 5 s
    main.start_background()
    proxy = ProxyDhcp(main, address="127.0.0.1", dhcp_port=0, pxe_port=0,
                      tftp_root=tmp_path / "tftproot").start()  # fmt: skip
    replayer.start()
    try:
        web2 = create_app(settings, main).test_client()
        with pytest.raises(StoreUnavailable):
            main.registry.store.ping()

        dhcp_seen = check_dhcp_during_outage(proxy, main, counted)
        assert main.flush_background(5), "sightings stuck behind the store"
        history[dhcp_seen[0]].append("dhcp")
        history[dhcp_seen[1]] = ["dhcp"]

        # -- 100 boots: 50 known, 50 never seen ----------------------------------------
        served = refused = 0
        for i in range(KNOWN + NEW):
            web = web1 if i % 2 else web2
            if i % 2 == 0:
                k = i // 2
                mac = known_mac(k)
                boot(web, mac, tokens[mac], expected_profile(k))
                history[mac] += ["ipxe", "cloud-config", "ready", "heartbeat"]
                served += 1
            else:
                mac = new_mac(i // 2)
                for path in (f"/ipxe?mac={mac}&platform=efi", f"/cloud-config?mac={mac}"):
                    r = web.get(path)
                    assert r.status_code == 503, (mac, path, r.status_code, r.text)
                    assert int(r.headers["Retry-After"]) > 0
                    assert not any(m in r.text for m in MARKERS.values())
                refused += 1
        for i in range(0, KNOWN, 2):  # a second heartbeat from half of them
            mac = known_mac(i)
            auth = {"Authorization": f"Bearer {tokens[mac]}"}
            assert web2.post(f"/api/v1/nodes/{mac}/heartbeat", headers=auth).status_code == 200
            history[mac].append("heartbeat")
        journal = main.registry.journal
        journalled = journal.depth()
        writes = sum(len(h) for h in history.values()) - before
        assert journalled == writes, "every write made during the outage is journalled"

        # -- etcd back after OUTAGE_S: the journal is replayed ---------------------------
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        member.start()
        assert member.proc is not None and member.proc.pid != etcd_pid
        outage = time.monotonic() - down_at
        back_at = time.monotonic()
        wait_for(lambda: journal.depth() < writes, 60, "the replay to begin", interval=0.01)
        began_at = time.monotonic()
        wait_for(lambda: journal.depth() == 0, 60, "the journal to be replayed", interval=0.01)
        replay_took = time.monotonic() - back_at
        replay_rate = writes / max(time.monotonic() - began_at, 0.001)
        assert main.flush_background(10)
    finally:
        replayer.stop()
        proxy.stop()
        main.stop_background()
    stats = journal.stats()
    assert stats == {"journalled": writes, "replayed": writes, "dropped": 0}

    # -- the registry against the history -------------------------------------------------
    plain = EtcdStore((member.client_url,), settings.store.etcd_prefix, timeout=5)
    try:
        nodes = {v.node.mac: v.node for v in plain.scan()}
    finally:
        plain.close()
    assert set(nodes) == set(history), "only machines that were recorded exist"
    for mac, kinds in history.items():
        check_node(nodes[mac], kinds)
    assert len({n.hostname for n in nodes.values()}) == len(nodes)
    print(
        f"\noutage figures: outage {outage:.1f} s; boots served {served} of {KNOWN} known, "
        f"{refused} new machines refused with 503; writes journalled {stats['journalled']}, "
        f"replayed {stats['replayed']} in {replay_took:.1f} s after etcd was back "
        f"({replay_rate:.0f}/s once begun), "
        f"dropped {stats['dropped']}; ProxyDHCP answered a known and a new machine and "
        f"refused one with no store call"
    )


def check_node(node: Node, kinds: list[str]) -> None:
    """The node's timeline is exactly the recorded history: nothing lost, nothing twice,
    in order. Heartbeats right after one another are one event, counted."""
    events = [e for e in node.events if e.kind is not EventKind.OPERATOR]
    got: list[str] = []
    for e in events:
        got += [e.kind.value] * e.count
    assert got == kinds, f"{node.mac}: {got} != {kinds}"
    assert len({e.id for e in node.events}) == len(node.events), f"{node.mac}: an id twice"
    ats = [e.at for e in events]
    assert ats == sorted(ats), f"{node.mac}: events out of order"
    assert [e.state for e in events] == [STATE_OF[e.kind.value] for e in events]
    assert node.state is STATE_OF[kinds[-1]]
    assert node.boot_count == kinds.count("ipxe")


def test_a_hung_etcd_fails_calls_by_their_deadline(tmp_path: Path, member: EtcdMember) -> None:
    deadline = 2.0
    settings = outage_settings(tmp_path, member, timeout=deadline)
    etcd = daemon.make_store(settings)
    assert isinstance(etcd, EtcdStore)
    counted = CountingStore(etcd)
    service = daemon.make_service(settings, counted)
    registry = service.registry
    assert isinstance(registry, ResilientRegistry)
    guarded = registry.guarded
    # The breaker's clock stands still unless the test moves it: what the breaker saves
    # is counted in store calls, whatever the machine's load does to the deadline.
    now = [1000.0]
    guarded.clock = lambda: now[0]
    web = create_app(settings, service).test_client()
    mac = known_mac(7)
    assert web.get(f"/ipxe?mac={mac}&platform=efi").status_code == 200
    assert member.proc is not None
    freeze(member.proc.pid)  # etcd hangs: connections open, no answers
    try:
        for what, call in (("get", lambda: etcd.get(mac)), ("scan", etcd.scan),
                           ("ping", etcd.ping)):  # fmt: skip
            ended = etcd.stats["deadline"] + etcd.stats["unreachable"]
            with pytest.raises(StoreUnavailable):
                call()  # (a call that waited forever would hang this test here)
            # ended by its deadline (or, on a loaded machine, gRPC's lost connection)
            assert etcd.stats["deadline"] + etcd.stats["unreachable"] == ended + 1, what
        # Through the boot service: one call waits out the deadline, then the breaker
        # answers every other call without asking the store.
        asked = counted.calls.total()
        assert web.get(f"/ipxe?mac={mac}&platform=efi").status_code == 200
        assert web.get(f"/cloud-config?mac={mac}").status_code == 200
        r = web.get(f"/ipxe?mac={new_mac(9)}")
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert counted.calls.total() - asked == 1, counted.calls
        assert registry.journal.depth() == 2
    finally:
        os.kill(member.proc.pid, signal.SIGCONT)
    # The breaker's clock runs again, from past its while; once etcd answers again, so does
    # the store, and the journal goes in.
    guarded.clock = lambda: now[0] + time.monotonic()
    wait_for(lambda: answers(guarded), 20, "etcd to answer after SIGCONT", interval=0.2)
    Replayer(registry).replay()
    node = registry.get(mac)
    assert node is not None and node.state is State.CONFIGURED and node.boot_count == 2


def freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it has stopped (delivery is
    asynchronous: a thread on another core may still answer one call)."""
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ("T", "t"):
                return False
        return True

    wait_for(stopped, 10, f"etcd (pid {pid}) to stop", interval=0.01)
