"""The RSGI entrance's own pieces (pxeserver/web/entrance.py), without a server: its query
reading is the standard library's, field for field, on whatever a client sends."""

from __future__ import annotations

from urllib.parse import parse_qs, parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxeserver.web.entrance import _args


class Scope:
    def __init__(self, query: str) -> None:
        self.query_string = query


def first_of_each(query: str) -> dict[str, str]:
    """What the entrance read with ``parse_qsl`` before: the first value of each name."""
    args: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        args.setdefault(name, value)
    return args


HOSTILE = [
    "",
    "&",
    "&&",
    "=",
    "==",
    "=&=",
    "a",
    "a=",
    "=a",
    "a==b",
    "a=b=c",
    "mac=1&mac=2",
    "mac=&mac=2",
    "mac&mac=2",
    "%zz=%zz",
    "a=%",
    "a=%4",
    "a=%41%42",
    "%6dac=52:54:00:12:34:56",
    "mac%3D52=x",
    "a%26b=c%26d",
    "a+b=c+d",
    "a%2Bb=c%2bd",
    "+=+",
    "a=%ff%fe",
    "a=%e2%80%a8",
    "a=%00",
    "ünï=cödé&ü=%C3%BC",
    "a=\u2028&b=\r\n",
    "a;b=c;d",
    "mac=52:54:00:12:34:56&uuid=${uuid}&arch=${buildarch}&platform=${platform}&ip=${netX/ip}",
    "mac=52:54:00:12:34:56&uuid=1b4e28ba-2fa1-11d2-883f-0016d3cca427&arch=x86_64"
    "&platform=pcbios&ip=192.0.2.7",
    "a=" + "x" * 5000,
    "&".join(f"k{i}=v{i}" for i in range(2000)),
    "&".join(["mac=1"] * 1000 + ["%m=2"]),
]


@pytest.mark.parametrize("query", HOSTILE)
def test_the_query_is_read_as_parse_qsl_reads_it(query: str) -> None:
    args = _args(Scope(query))
    assert args == first_of_each(query)
    assert list(args) == list(first_of_each(query))  # in the same order, too
    assert args == {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["&", "=", "%", "+", "a", "mac", "2", "f", "%4", "ü", "\u2028"])))
def test_any_query_of_the_awkward_characters_reads_alike(parts: list[str]) -> None:
    query = "".join(parts)
    assert _args(Scope(query)) == first_of_each(query)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_reads_alike(query: str) -> None:
    assert _args(Scope(query)) == first_of_each(query)
