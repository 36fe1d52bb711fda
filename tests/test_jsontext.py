"""pxeserver/jsontext.py makes the text json.dumps makes: for any string (quotes,
backslashes, control characters, non-ASCII, lone surrogates) and number, and so for
every event (and the record that carries it) it serialises (pxeserver/model.py)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from pxeserver import jsontext
from pxeserver.model import MAC, Event, EventKind, Node, State

NUMBERS = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.booleans())


@given(st.text())
def test_a_string_is_what_json_dumps_writes(text: str) -> None:
    assert jsontext.string(text) == json.dumps(text)


@given(NUMBERS)
def test_a_number_is_what_json_dumps_writes(value: float) -> None:
    assert jsontext.number(value) == json.dumps(value)


def test_non_strings_go_to_json_dumps() -> None:
    assert jsontext.string(None) == "null" and jsontext.number(None) == "null"
    assert jsontext.string(EventKind.IPXE) == '"ipxe"'


@given(st.sampled_from(EventKind), st.one_of(st.floats(), st.integers()), st.sampled_from(State),
       st.text(), st.text(), st.integers(min_value=1))  # fmt: skip
def test_an_event_and_its_node_are_what_json_dumps_writes(
    kind: EventKind, at: float, state: State, detail: str, event_id: str, count: int
) -> None:
    event = Event(kind, at, state, detail, event_id, count)
    assert event.json == json.dumps(event.to_dict())
    node = Node(mac=MAC.parse("52:54:00:17:00:01"), events=(event, event),
                recent_ids=(event_id, "x"))  # fmt: skip
    assert node.to_json()[0] == json.dumps(node.to_dict())
