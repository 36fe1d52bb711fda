import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxeserver.errors import InvalidInput
from pxeserver.model import (
    HOSTNAME_PATTERN,
    LABEL_VALUE_PATTERN,
    MAC,
    MAC_PATTERN,
    Event,
    EventKind,
    Node,
    State,
    label_value_problem,
    parse_uuid,
    valid_hostname,
)


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


def test_a_separated_mac_of_twelve_characters_is_not_taken_for_hex_digits() -> None:
    # found by schemathesis: "5:c:05:e:9:e" has the length of "525400123456"
    assert MAC.parse("5:c:05:e:9:e").value == "05:0c:05:0e:09:0e"


@settings(max_examples=300, deadline=None)
@given(st.from_regex(MAC_PATTERN, fullmatch=True))
def test_whatever_the_documented_mac_pattern_allows_parses(text: str) -> None:
    """The API's document shows MAC_PATTERN; a MAC it allows must be accepted."""
    assert re.fullmatch(MAC_PATTERN, MAC.parse(text).value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_the_label_value_pattern_and_its_check_agree(text: str) -> None:
    allowed = re.fullmatch(LABEL_VALUE_PATTERN, text) is not None and len(text) <= 253
    assert (label_value_problem(text) is None) == allowed


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.from_regex(HOSTNAME_PATTERN, fullmatch=True), st.text(max_size=70)))
def test_the_hostname_pattern_is_the_hostname_rule(text: str) -> None:
    allowed = 0 < len(text) <= 63 and set(text) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    allowed = allowed and not text.startswith("-") and not text.endswith("-")
    assert valid_hostname(text) == allowed


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
