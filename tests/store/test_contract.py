"""The contract every NodeStore backend keeps; runs against real SQLite and a real etcd."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from pxeserver.errors import AlreadyExists, Conflict, HostnameTaken
from pxeserver.model import MAC, Node, State

MAC1 = MAC.parse("52:54:00:00:00:01")
MAC2 = MAC.parse("52:54:00:00:00:02")


def by_index(i: int) -> str:
    return f"node-{i:03d}"


def test_unknown_node_is_none(store: Any) -> None:
    assert store.get(MAC1) is None
    assert store.scan() == []


def test_create_then_get(store: Any) -> None:
    created = store.create(Node(mac=MAC1, labels={"rack": "r1"}), by_index)
    assert created.node.hostname == "node-001"
    got = store.get(MAC1)
    assert got is not None and got.node == created.node and got.revision == created.revision


def test_create_twice_is_already_exists(store: Any) -> None:
    store.create(Node(mac=MAC1), by_index)
    with pytest.raises(AlreadyExists):
        store.create(Node(mac=MAC1), by_index)


def test_hostnames_count_up_and_skip_taken_names(store: Any) -> None:
    a = store.create(Node(mac=MAC1), by_index)
    # an operator takes the name the counter would give next
    store.update(a, a.node.replace(hostname="node-002"))
    b = store.create(Node(mac=MAC2), by_index)
    assert b.node.hostname == "node-003"


def test_update_is_compare_and_swap(store: Any) -> None:
    first = store.create(Node(mac=MAC1), by_index)
    second = store.update(first, first.node.replace(state=State.BOOTING))
    assert second.revision != first.revision
    with pytest.raises(Conflict):
        store.update(first, first.node.replace(state=State.READY))  # stale revision
    assert store.get(MAC1).node.state is State.BOOTING


def test_update_of_a_vanished_node_conflicts(store: Any) -> None:
    first = store.create(Node(mac=MAC1), by_index)
    store.delete(MAC1)
    with pytest.raises(Conflict):
        store.update(first, first.node.replace(state=State.BOOTING))


def test_rename_reserves_the_new_name_and_frees_the_old(store: Any) -> None:
    a = store.create(Node(mac=MAC1), by_index)
    b = store.create(Node(mac=MAC2), by_index)
    with pytest.raises(HostnameTaken):
        store.update(b, b.node.replace(hostname="node-001"))
    a2 = store.update(a, a.node.replace(hostname="db-1"))
    assert store.get(MAC1).node.hostname == "db-1"
    # node-001 is free again
    b2 = store.update(b, b.node.replace(hostname="node-001"))
    assert b2.node.hostname == "node-001"
    assert a2.node.hostname == "db-1"


def test_delete_frees_the_hostname(store: Any) -> None:
    store.create(Node(mac=MAC1), lambda i: "fixed-name")
    assert store.delete(MAC1) is True
    assert store.delete(MAC1) is False
    again = store.create(Node(mac=MAC2), lambda i: "fixed-name")
    assert again.node.hostname == "fixed-name"


def test_delete_with_a_stale_revision_conflicts(store: Any) -> None:
    a = store.create(Node(mac=MAC1), by_index)
    store.update(a, a.node.replace(state=State.BOOTING))
    with pytest.raises(Conflict):
        store.delete(MAC1, a.revision)
    assert store.get(MAC1) is not None


def test_no_free_hostname(store: Any) -> None:
    store.create(Node(mac=MAC1), lambda i: "same")
    with pytest.raises(HostnameTaken):
        store.create(Node(mac=MAC2), lambda i: "same")
    assert store.get(MAC2) is None


def test_scan_is_in_mac_order_and_complete(store: Any) -> None:
    macs = [MAC.parse(f"52:54:00:00:{i // 256:02x}:{i % 256:02x}") for i in range(1200)]
    for mac in reversed(macs[:40]):
        store.create(Node(mac=mac), by_index)
    assert [v.node.mac for v in store.scan()] == sorted(macs[:40])


def test_concurrent_creates_get_distinct_hostnames(store: Any) -> None:
    macs = [MAC.parse(f"52:54:00:00:01:{i:02x}") for i in range(60)]
    errors: list[BaseException] = []

    def create(mac: MAC) -> None:
        try:
            store.create(Node(mac=mac), by_index)
        except BaseException as exc:  # noqa: BLE001 - the test reports every failure
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(m,)) for m in macs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = [v.node.hostname for v in store.scan()]
    assert len(names) == 60 and len(set(names)) == 60


def test_concurrent_updates_lose_nothing(store: Any) -> None:
    store.create(Node(mac=MAC1), by_index)

    def bump() -> None:
        for _ in range(20):
            while True:
                current = store.get(MAC1)
                try:
                    store.update(
                        current, current.node.replace(boot_count=current.node.boot_count + 1)
                    )
                    break
                except Conflict:
                    continue

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get(MAC1).node.boot_count == 80


def test_etcd_records_are_plain_json_for_etcdctl(etcd: Any) -> None:
    from pxeserver.store.etcd import EtcdStore

    s = EtcdStore((etcd.client_url,), "/pxeserver-etcdctl/", timeout=3)
    try:
        s.create(Node(mac=MAC1, labels={"rack": "r1"}), by_index)
    finally:
        s.close()
    out = etcd.etcdctl("get", "--prefix", "/pxeserver-etcdctl/nodes/").splitlines()
    assert out[0] == "/pxeserver-etcdctl/nodes/52:54:00:00:00:01"
    doc = json.loads(out[1])
    assert doc["hostname"] == "node-001" and doc["labels"] == {"rack": "r1"}
    hosts = etcd.etcdctl("get", "/pxeserver-etcdctl/hostnames/node-001", "--print-value-only")
    assert hosts.strip() == "52:54:00:00:00:01"


def test_etcd_create_that_loses_the_race_goes_on_from_the_winners_counter(etcd: Any) -> None:
    """While a create holds index 1 in hand, 50 other creates win node-001 to node-050.
    Its next probe must start from the counter they left, not walk one index per round
    trip behind them: so a loser once needed hundreds of probes in a storm of new
    machines, and gave up with HostnameTaken after 1,000 while names were free."""
    from pxeserver.store.etcd import EtcdStore

    s = EtcdStore((etcd.client_url,), "/pxeserver-race/", timeout=3)
    asked: list[int] = []

    def hostname_for(index: int) -> str:
        if not asked:  # the winners, between this create's counter read and its write
            for i in range(50):
                s.create(Node(mac=MAC.parse(f"52:54:00:03:00:{i:02x}")), by_index)
        asked.append(index)
        return by_index(index)

    try:
        got = s.create(Node(mac=MAC1), hostname_for)
    finally:
        s.close()
    assert asked == [1, 51] and got.node.hostname == "node-051"


def test_etcd_store_fails_over_to_the_next_endpoint(etcd: Any) -> None:
    from pxeserver.store.etcd import EtcdStore

    from ..support.net import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    s = EtcdStore((dead, etcd.client_url), "/pxeserver-failover/", timeout=2)
    try:
        s.create(Node(mac=MAC1), by_index)
        assert s.get(MAC1) is not None
        assert s.endpoints[s._current] == etcd.client_url
    finally:
        s.close()


def test_etcd_down_is_store_unavailable_after_one_attempt() -> None:
    from pxeserver.errors import StoreUnavailable
    from pxeserver.store.etcd import EtcdStore

    from ..support.net import free_port

    s = EtcdStore((f"http://127.0.0.1:{free_port()}",), timeout=1)
    with pytest.raises(StoreUnavailable, match="no endpoint answered"):
        s.get(MAC1)
    # one attempt, ended by the refused connection (or its deadline on a loaded machine)
    assert s.stats["unreachable"] + s.stats["deadline"] == 1, s.stats
    s.close()
