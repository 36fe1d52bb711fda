"""TFTP packets and option negotiation: pure rules every answer must keep."""

from __future__ import annotations

import pytest

from pxeserver.tftp import packets as tp
from pxeserver.tftp.files import Refused, check_name, netascii


def test_request_options_are_lower_cased_and_kept_in_order() -> None:
    req = tp.parse(tp.request("undionly.kpxe", {"TSize": 0, "BLKSIZE": 1432}))
    assert isinstance(req, tp.Request)
    assert req.opcode == tp.RRQ and req.filename == "undionly.kpxe" and req.mode == "octet"
    assert list(req.options.items()) == [("tsize", "0"), ("blksize", "1432")]


@pytest.mark.parametrize(
    ("options", "granted", "blksize", "window"),
    [
        ({}, {}, 512, 1),  # nothing asked: no OACK at all
        ({"multicast": ""}, {}, 512, 1),  # unknown options are not answered
        ({"blksize": "abc"}, {}, 512, 1),  # not a number: ignored, never fatal
        ({"blksize": "4"}, {}, 512, 1),  # below 8: ignored
        ({"blksize": "70000"}, {"blksize": "65464"}, 65464, 1),  # above the RFC's maximum
        ({"blksize": "1468"}, {"blksize": "1468"}, 1468, 1),
        ({"tsize": "0"}, {"tsize": "1000"}, 512, 1),
        ({"timeout": "0"}, {}, 512, 1),
        ({"timeout": "256"}, {}, 512, 1),
        ({"timeout": "3"}, {"timeout": "3"}, 512, 1),
        ({"windowsize": "4"}, {"windowsize": "4"}, 512, 4),
        ({"windowsize": "0"}, {}, 512, 1),
        ({"windowsize": "1000"}, {"windowsize": "64"}, 512, 64),
        ({"blksize": "-5", "tsize": "x"}, {}, 512, 1),
    ],
)
def test_negotiation(
    options: dict[str, str], granted: dict[str, str], blksize: int, window: int
) -> None:
    neg = tp.negotiate(options, 1000)
    assert dict(neg.granted) == granted
    assert (neg.blksize, neg.windowsize) == (blksize, window)


def test_tsize_is_not_answered_when_the_size_is_unknown() -> None:
    assert dict(tp.negotiate({"tsize": "0"}, None).granted) == {}


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "no opcode"),
        (b"\x00", "no opcode"),
        (b"\x00\x01file", "not NUL-terminated"),
        (b"\x00\x01file\x00", "no transfer mode"),
        (b"\x00\x01file\x00bogus\x00", "unknown transfer mode"),
        (b"\x00\x01fi\xffle\x00octet\x00", "not ASCII"),
        (b"\x00\x04\x00", "fewer than 4"),
        (b"\x00\x05\x00", "fewer than 4"),
        (b"\x00\x09", "unknown opcode 9"),
        (b"\x00\x01" + b"a" * 3000 + b"\x00octet\x00", "more than"),
    ],
)
def test_malformed_packets(raw: bytes, why: str) -> None:
    with pytest.raises(tp.PacketError, match=why):
        tp.parse(raw)


def test_packets_round_trip() -> None:
    assert tp.parse(tp.ack(65535 + 2)) == tp.Ack(1)
    assert tp.parse(tp.data(7, b"xyz")) == tp.Data(7, b"xyz")
    assert tp.parse(tp.error(1, "file not found")) == tp.Error(1, "file not found")
    assert tp.oack({"blksize": "1432"}) == b"\x00\x06blksize\x001432\x00"
    assert tp.ack_block(tp.ack(300)) == 300 and tp.ack_block(b"\x00\x03\x00\x01") is None


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "a/../../x", "/etc/passwd", "a//b", "./x", "dir/", "x\\..\\y",
     "nul\x00byte", "tab\there", "a" * 256],
)  # fmt: skip
def test_names_outside_the_root_are_refused(name: str) -> None:
    with pytest.raises(Refused) as info:
        check_name(name)
    assert info.value.code == tp.ACCESS_VIOLATION


def test_netascii_line_endings() -> None:
    assert netascii(b"a\nb\rc") == b"a\r\nb\r\0c"
