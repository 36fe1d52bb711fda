import pytest

from pxeserver.errors import InvalidInput
from pxeserver.model import MAC, Event, EventKind, Node, State, parse_uuid


@pytest.mark.parametrize(
    "text",
    [
        "52:54:00:12:34:56",
        "52-54-00-12-34-56",
        "525400123456",
        "5254.0012.3456",
        "52:54:00:12:34:56".upper(),
        " 52:54:00:12:34:56 ",
        "52:54:0:12:34:56",  # single-digit octets, as macOS arp prints them
    ],
)
def test_mac_forms_normalise_to_one(text: str) -> None:
    assert MAC.parse(text).value == "52:54:00:12:34:56"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "zz",
        "52:54:00:12:34",
        "52:54:00:12:34:56:78",
        "52:54-00:12:34:56",  # mixed separators
        "52545400123456",
        "g2:54:00:12:34:56",
        "5254.0012.345",
        "../../etc/passwd",
        "52:54:00:12:34:56\x00",
        "a" * 5000,
    ],
)
def test_bad_macs_say_what_was_expected(text: str) -> None:
    with pytest.raises(InvalidInput, match="aa:bb:cc:dd:ee:ff"):
        MAC.parse(text)


def test_mac_views() -> None:
    mac = MAC.parse("52:54:00:AB:CD:EF")
    assert mac.hex == "525400abcdef"
    assert mac.dashed == "52-54-00-ab-cd-ef"
    assert MAC.from_bytes(bytes.fromhex("525400abcdef")) == mac


def test_uuid() -> None:
    assert (
        parse_uuid("6FB9D0E1-0000-4000-8000-00000000ABCD") == "6fb9d0e1-0000-4000-8000-00000000abcd"
    )
    assert parse_uuid("") is None
    with pytest.raises(InvalidInput):
        parse_uuid("not-a-uuid")


def test_node_round_trips_through_its_stored_form() -> None:
    node = Node(
        mac=MAC.parse("52:54:00:12:34:56"),
        hostname="node-001",
        uuid="6fb9d0e1-0000-4000-8000-00000000abcd",
        arch="x86_64",
        platform="efi",
        ip="192.0.2.10",
        profile="coreos",
        labels={"rack": "r1"},
        state=State.READY,
        first_seen=1.0,
        last_seen=2.0,
        last_heartbeat=3.0,
        boot_count=2,
        events=(Event(EventKind.READY, 3.0, State.READY, "x"),),
        recent_ids=("a", "b"),
    )
    assert Node.from_dict(node.to_dict()) == node
