"""The boot policy (pxeserver/boot.py), the hub every protocol asks, over fake stores
(tests/support/fakes.py): what it decides, what it records, what it refuses, and which of
its paths never ask the store. The HTTP, TFTP and ProxyDHCP tests show the same decisions
through their own wire; here the store is whatever the case needs, as in matchbox's
FixedStore, EmptyStore and BrokenStore tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pxeserver.boot import BootService, NoMatch
from pxeserver.daemon import make_service
from pxeserver.errors import Forbidden, InvalidInput, NotFound, RenderError, StoreUnavailable
from pxeserver.model import MAC, EventKind, Machine, Node, State
from pxeserver.store import NodeStore

from .support.fakes import BrokenStore, CountingStore, EmptyStore, FixedStore
from .support.settings import LAB_PROFILES, make_settings

BASE = "http://192.0.2.1:8080"
KNOWN = Node(
    mac=MAC.parse("52:54:00:00:00:01"),
    hostname="node-007",
    labels={"rack": "r1"},
    state=State.READY,
    token="known-token",
    boot_count=3,
)
NEW = MAC.parse("52:54:00:00:00:09")
EXCLUDED = MAC.parse("52:54:00:00:00:0e")
# Racked machines boot the debug profile; UEFI machines coreos; nothing else boots.
GROUPS = [
    {"name": "racked", "profile": "debug", "selectors": {"rack": "r1"}},
    {"name": "uefi", "profile": "coreos", "selectors": {"platform": "efi"}},
]


def policy(tmp_path: Path, store: NodeStore, **raw: Any) -> BootService:
    raw.setdefault("groups", GROUPS)
    raw.setdefault("server", {"exclude_macs": [str(EXCLUDED)]})
    return make_service(make_settings(tmp_path, raw), store)


def efi(mac: MAC) -> Machine:
    return Machine(mac, arch="x86_64", platform="efi")


def bios(mac: MAC) -> Machine:
    return Machine(mac, arch="i386", platform="pcbios")


# -- a fixed store: what is decided and recorded ------------------------------------------


def test_a_new_machine_is_registered_booting_and_its_script_names_it(tmp_path: Path) -> None:
    store = CountingStore(FixedStore())
    script = policy(tmp_path, store).ipxe_script(efi(NEW), BASE)
    assert "# pxeserver: 52:54:00:00:00:09 (node-001) boots profile 'coreos'" in script
    assert f"cloud-config-url={BASE}/cloud-config?mac={NEW}" in script
    stored = store.inner.get(NEW)
    assert stored is not None
    node = stored.node
    assert node.hostname == "node-001" and node.state is State.BOOTING and node.boot_count == 1
    assert (node.arch, node.platform) == ("x86_64", "efi")
    assert [(e.kind, e.detail) for e in node.events] == [(EventKind.IPXE, "profile coreos")]
    assert store.calls["create"] == 1


def test_a_known_machine_boots_what_its_labels_select_and_keeps_its_name(tmp_path: Path) -> None:
    store = FixedStore([KNOWN])
    script = policy(tmp_path, store).ipxe_script(bios(KNOWN.mac), BASE)
    assert "(node-007) boots profile 'debug'" in script and " rack=r1 " in script
    stored = store.get(KNOWN.mac)
    assert stored is not None
    node = stored.node
    assert node.hostname == "node-007" and node.token == "known-token"
    assert node.state is State.BOOTING and node.boot_count == 4
    assert node.events[-1].detail == "profile debug"


def test_no_group_is_no_match_with_every_verdict_and_the_attempt_is_recorded(
    tmp_path: Path,
) -> None:
    store = FixedStore()
    service = policy(tmp_path, store)
    with pytest.raises(NoMatch) as caught:
        service.ipxe_script(bios(NEW), BASE)
    assert [(v.group, v.matched) for v in caught.value.verdicts] == [
        ("racked", False),
        ("uefi", False),
    ]
    stored = store.get(NEW)
    assert stored is not None
    node = stored.node
    assert node.state is State.DISCOVERED and node.boot_count == 0  # no step was taken
    assert node.events[-1].detail == "no group matches; nothing served"


def test_explain_gives_the_decision_it_boots_by(tmp_path: Path) -> None:
    service = policy(tmp_path, FixedStore([KNOWN, Node(mac=NEW, hostname="node-009")]))
    why = service.explain(bios(KNOWN.mac), BASE)
    assert why.preview is not None and why.preview.decision.profile == "debug"
    assert why.reason == why.preview.decision.reason and "racked" in why.reason
    assert [(v.group, v.matched) for v in why.verdicts] == [("racked", True), ("uefi", False)]
    # a registered machine no group selects: the verdicts say why, nothing is rendered
    unmatched = service.explain(bios(NEW), BASE)
    assert unmatched.preview is None and "no group selects" in unmatched.reason
    assert [v.matched for v in unmatched.verdicts] == [False, False]


def test_where_a_profile_comes_from(tmp_path: Path) -> None:
    service = policy(tmp_path, FixedStore())
    assert service.effective_profile(KNOWN) == ("debug", "group racked")
    assert service.effective_profile(KNOWN.replace(profile="flatcar")) == ("flatcar", "operator")
    assert service.effective_profile(Node(mac=NEW)) == (None, "no group matches")


def test_an_assigned_profile_that_is_gone_says_how_to_assign_another(tmp_path: Path) -> None:
    store = CountingStore(FixedStore([KNOWN.replace(profile="retired")]))
    with pytest.raises(RenderError, match=r"'retired', which is not in .*pxeserver nodes set"):
        policy(tmp_path, store).ipxe_script(bios(KNOWN.mac), BASE)
    assert store.writes() == 0


def test_a_template_error_records_nothing(tmp_path: Path) -> None:
    broken = {**LAB_PROFILES["debug"], "args": ["{{ node.no_such_field }}"]}
    store = CountingStore(FixedStore([KNOWN]))
    service = policy(tmp_path, store, profiles={**LAB_PROFILES, "debug": broken})
    with pytest.raises(RenderError):
        service.ipxe_script(bios(KNOWN.mac), BASE)
    assert store.writes() == 0
    stored = store.inner.get(KNOWN.mac)
    assert stored is not None and stored.node == KNOWN
    # positive control: the same call with a working profile does write
    policy(tmp_path, store).ipxe_script(bios(KNOWN.mac), BASE)
    assert store.writes() == 1


def test_ignition_for_a_profile_without_one_is_not_found_and_records_nothing(
    tmp_path: Path,
) -> None:
    store = CountingStore(FixedStore([KNOWN]))
    with pytest.raises(NotFound, match="'debug', which has no Ignition config"):
        policy(tmp_path, store).ignition(KNOWN.mac, BASE)
    assert store.writes() == 0


def test_operator_input_is_refused_before_the_store_is_asked(tmp_path: Path) -> None:
    store = CountingStore(FixedStore([KNOWN]))
    service = policy(tmp_path, store)
    with pytest.raises(InvalidInput, match="no profile named 'nope'; the profiles are: coreos"):
        service.set_node(KNOWN.mac, profile="nope")
    with pytest.raises(InvalidInput, match="'Node_7' is not a valid hostname"):
        service.set_node(KNOWN.mac, hostname="Node_7")
    assert store.calls.total() == 0
    # positive control: valid input reaches the store and changes the node
    changed = service.set_node(KNOWN.mac, profile="flatcar", hostname="node-070")
    assert (changed.profile, changed.hostname) == ("flatcar", "node-070")
    assert store.writes() == 1


def test_phoning_home_needs_the_nodes_token_and_an_install_is_remembered(tmp_path: Path) -> None:
    profiles = {**LAB_PROFILES, "debug": {**LAB_PROFILES["debug"], "install": "disk"}}
    store = FixedStore([KNOWN.replace(state=State.CONFIGURED)])
    service = policy(tmp_path, store, profiles=profiles)
    with pytest.raises(Forbidden):
        service.phone_home(KNOWN.mac, "not-its-token", EventKind.READY)
    stored = store.get(KNOWN.mac)
    assert stored is not None and stored.node.state is State.CONFIGURED
    node = service.phone_home(KNOWN.mac, "known-token", EventKind.READY)
    assert node.state is State.READY and node.installed == "debug"
    assert node.events[-1].detail == "profile debug installed on disk: later boots start from it"


def test_nodes_are_filtered_by_state_profile_and_labels(tmp_path: Path) -> None:
    other = Node(mac=NEW, hostname="node-009", state=State.BOOTING, profile="flatcar")
    service = policy(tmp_path, FixedStore([KNOWN, other]))
    assert [n.mac for n in service.nodes()] == [KNOWN.mac, NEW]
    assert [n.mac for n in service.nodes(state=State.BOOTING)] == [NEW]
    assert [n.mac for n in service.nodes(profile="debug")] == [KNOWN.mac]
    assert [n.mac for n in service.nodes(labels={"rack": "r1"})] == [KNOWN.mac]
    assert service.nodes(labels={"rack": "r2"}) == []


# -- an empty store: nothing is known -----------------------------------------------------


def test_an_empty_store_knows_no_node(tmp_path: Path) -> None:
    service = policy(tmp_path, EmptyStore())
    for ask in (
        lambda: service.node(NEW),
        lambda: service.explain(efi(NEW), BASE),
        lambda: service.forget(NEW),
    ):
        with pytest.raises(NotFound, match="no node with MAC 52:54:00:00:00:09"):
            ask()
    assert service.nodes() == [] and service.health() is None
    # a preview of a machine never seen: its placeholder name, and not known
    preview = service.preview(efi(NEW), BASE)
    assert not preview.known and preview.node.hostname == "node-000"
    assert preview.decision.profile == "coreos" and preview.cloud_config is not None


# -- a broken store: unavailable is said, never turned into "no match" or "not found" ---


def test_a_broken_store_is_unavailable_never_no_match_or_not_found(tmp_path: Path) -> None:
    service = policy(tmp_path, BrokenStore("etcd: connection refused"))
    for ask in (
        lambda: service.ipxe_script(efi(NEW), BASE),
        lambda: service.cloud_config(NEW, BASE),
        lambda: service.ignition(NEW, BASE),
        lambda: service.node(NEW),
        lambda: service.explain(efi(NEW), BASE),
        lambda: service.nodes(),
        lambda: service.set_node(NEW, labels={"rack": "r2"}),
        lambda: service.phone_home(NEW, "t", EventKind.HEARTBEAT),
        lambda: service.forget(NEW),
    ):
        with pytest.raises(StoreUnavailable, match="connection refused"):
            ask()
    assert service.health() == "unavailable: etcd: connection refused"


def test_a_preview_goes_on_without_the_record_when_the_store_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    preview = policy(tmp_path, BrokenStore()).preview(efi(NEW), BASE)
    assert not preview.known and preview.decision.profile == "coreos"
    assert "previewing 52:54:00:00:00:09 without its record" in caplog.text


# -- a counting store: the paths of the UDP services never ask the store -----------------


def test_what_proxydhcp_and_tftp_ask_makes_no_store_call(tmp_path: Path) -> None:
    store = CountingStore(FixedStore([KNOWN]))
    service = policy(tmp_path, store)
    assert service.boot_refusal(efi(NEW)) is None  # a new UEFI machine: a default group
    assert service.boot_refusal(bios(NEW)) is not None  # a new BIOS machine: nothing
    assert service.boot_refusal(bios(EXCLUDED)) == "excluded by server.exclude_macs"
    service.sightings.remember(KNOWN)  # what the view holds once the record was read
    assert service.boot_refusal(bios(KNOWN.mac)) is None  # its labels select it
    service.note_dhcp(Machine(KNOWN.mac, ip="192.0.2.7", platform="pcbios"), "DISCOVER")
    seen = service.machine_at("192.0.2.7")
    assert seen is not None and seen.mac == KNOWN.mac
    assert "#!ipxe" in service.chain_script(BASE)
    assert service.preview(efi(NEW), BASE, use_registry=False).decision.profile == "coreos"
    assert store.calls.total() == 0, store.calls
    # positive control: the background writer is what takes the sighting to the store
    service.start_background()
    try:
        assert service.flush_background(10)
    finally:
        service.stop_background()
    assert store.calls["update"] == 1, store.calls
    stored = store.inner.get(KNOWN.mac)
    assert stored is not None and stored.node.events[-1].kind is EventKind.DHCP
