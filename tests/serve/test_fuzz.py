"""Fuzzing: the TFTP and DHCP parsers with hypothesis, and a seed run against a live server.

The million-packet run is ``bench/fuzz_packets.py`` (docs/RELIABILITY.md has its figures);
here a few thousand examples per parser and a few thousand packets against a real
``pxeserver serve`` keep every CI run honest. Hypothesis runs derandomized and without its
example database, so a failure here fails the same way on every machine.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxeserver.dhcp import packets as dp
from pxeserver.dhcp.proxy import Loaders, choose, is_pxe_client, machine_of
from pxeserver.tftp import packets as tp
from pxeserver.tftp.files import Refused, locate

from ..support.dhcp import GOLDEN
from ..support.settings import REPO

FUZZ = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
SOME = settings(FUZZ, max_examples=300)

OPTION_NAMES = st.sampled_from(
    [
        "blksize",
        "BLKSIZE",
        "tsize",
        "TSize",
        "timeout",
        "windowsize",
        "WINDOWSIZE",
        "multicast",
        "rollover",
        "",
    ]
) | st.text(max_size=8)
OPTION_VALUES = st.sampled_from(
    [
        "abc",
        "99999999",
        "-1",
        "0",
        "7",
        "8",
        "65464",
        "65535",
        "1" * 30,
        "",
        " 4",
        "4 ",
        "0x10",
        "\x1e4",
        "\u00b2",
    ]
) | st.text(max_size=12)


def _golden() -> list[bytes]:
    paths = sorted(GOLDEN.glob("*.hex")) + sorted(GOLDEN.glob("captured/*.hex"))
    return [bytes.fromhex(p.read_text().replace("\n", "")) for p in paths]


GOLDEN_PACKETS = _golden()


# -- TFTP --------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=600))
def test_tftp_parse_any_bytes(data: bytes) -> None:
    try:
        packet = tp.parse(data)
    except tp.PacketError as exc:
        assert str(exc)  # a sentence, never an empty message
        return
    assert isinstance(packet, tp.Request | tp.Ack | tp.Error | tp.Data)


def _request_bytes(opcode: int, name: bytes, mode: bytes, pairs: list[tuple[str, str]]) -> bytes:
    body = name + b"\0" + mode + b"\0"
    for k, v in pairs:
        body += k.encode("utf-8", "replace") + b"\0" + v.encode("utf-8", "replace") + b"\0"
    return opcode.to_bytes(2, "big") + body


@SOME
@given(
    st.sampled_from([tp.RRQ, tp.WRQ]),
    st.binary(max_size=40).filter(lambda b: b"\0" not in b),
    st.sampled_from([b"octet", b"OCTET", b"netascii", b"mail", b"bin"]),
    st.lists(st.tuples(OPTION_NAMES, OPTION_VALUES), max_size=6),
    st.integers(min_value=0, max_value=10**9) | st.none(),
)
def test_tftp_requests_with_any_options_answer_only_what_was_asked(
    opcode: int, name: bytes, mode: bytes, pairs: list[tuple[str, str]], size: int | None
) -> None:
    raw = _request_bytes(opcode, name, mode, [(k.replace("\0", ""), v.replace("\0", ""))
                                             for k, v in pairs])  # fmt: skip
    try:
        req = tp.parse(raw)
    except tp.PacketError:
        return
    assert isinstance(req, tp.Request)
    neg = tp.negotiate(req.options, size)
    asked = {k.lower() for k, _ in pairs}
    assert set(neg.granted) <= asked  # never an option the client did not ask for
    assert tp.MIN_BLKSIZE <= neg.blksize <= tp.MAX_BLKSIZE
    assert 1 <= neg.windowsize <= 64
    if "blksize" in neg.granted:
        assert int(neg.granted["blksize"]) <= int(req.options["blksize"].strip())
    if neg.timeout is not None:
        assert 1 <= neg.timeout <= 255
    if neg.granted:
        oack = tp.oack(neg.granted)
        assert oack[:2] == b"\0\x06" and len(oack) < 2 + 64 * len(neg.granted)


@SOME
@given(st.text(max_size=300))
def test_tftp_names_stay_inside_the_root(tmp_path_factory: pytest.TempPathFactory,
                                         name: str) -> None:  # fmt: skip
    base = _root(tmp_path_factory)
    try:
        real = locate(base / "root", base / "assets", name)
    except Refused as exc:
        assert exc.code in (tp.ACCESS_VIOLATION, tp.FILE_NOT_FOUND)
        return
    inside = [os.path.realpath(base / "root"), os.path.realpath(base / "assets")]
    assert any(real == d or real.startswith(d + os.sep) for d in inside), (name, real)


_ROOTS: dict[str, Path] = {}


def _root(factory: pytest.TempPathFactory) -> Path:
    """One small tree for every example: a root, an assets folder, an escaping symlink."""
    if "base" not in _ROOTS:
        base = factory.mktemp("fuzzroot")
        (base / "root" / "sub").mkdir(parents=True)
        (base / "assets").mkdir()
        (base / "secret.txt").write_text("outside")
        (base / "root" / "escape").symlink_to(base / "secret.txt")
        (base / "root" / "up").symlink_to(base)
        _ROOTS["base"] = base
    return _ROOTS["base"]


# -- DHCP --------------------------------------------------------------------------------------


def _check_dhcp(data: bytes) -> None:
    try:
        packet = dp.parse(data)
    except dp.PacketError as exc:
        assert str(exc)
        return
    # every accessor a hostile packet reaches must answer or say None, never raise
    _ = (packet.message_type, packet.client_arch, packet.client_uuid, packet.vendor_class,
         packet.requested_ip, packet.is_ipxe, packet.text(dp.OPT_VENDOR_CLASS))  # fmt: skip
    mac = packet.mac
    if mac is None or not is_pxe_client(packet):
        return
    machine_of(packet, mac)
    offer = choose(packet, "192.0.2.1", Loaders())
    if isinstance(offer, str):
        return
    for kind in (dp.OFFER, dp.ACK):
        reply = dp.parse(dp.build_reply(packet, message_type=kind, server_ip="192.0.2.1",
                                        boot_file=offer.boot_file,
                                        vendor_class=offer.vendor_class))  # fmt: skip
        assert reply.yiaddr == "0.0.0.0" and reply.op == dp.BOOTREPLY


@FUZZ
@given(st.binary(max_size=700))
def test_dhcp_parse_any_bytes(data: bytes) -> None:
    _check_dhcp(data)


@st.composite
def mutated_golden(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(GOLDEN_PACKETS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        at = draw(st.integers(0, len(data)))
        if op == 0 and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del data[at : at + draw(st.integers(1, 20))]
        elif op == 3:
            del data[at:]
        else:  # an option with a length past the end, or option 52 anywhere
            code = draw(st.sampled_from([52, 53, 60, 93, 97, 175]))
            data[at:at] = bytes([code, draw(st.integers(0, 255))])
    return bytes(data)


@FUZZ
@given(mutated_golden())
def test_dhcp_mutated_golden_packets(data: bytes) -> None:
    _check_dhcp(data)


@SOME
@given(st.sampled_from(GOLDEN_PACKETS), st.integers(0, 255), st.integers(0, 255),
       st.integers(0, 255))  # fmt: skip
def test_dhcp_option_overload_in_any_combination(base: bytes, value: int, in_file: int,
                                                 in_sname: int) -> None:  # fmt: skip
    data = bytearray(base)
    data[108:236] = bytes([52, 1, in_file, 53, 1, 1, 255]).ljust(128, b"\0")
    data[44:108] = bytes([52, 1, in_sname, 255]).ljust(64, b"\0")
    raw = bytes(data[:240]) + bytes([52, 1, value]) + bytes(data[240:])
    with pytest.raises(dp.PacketError, match="option 52"):
        dp.parse(raw)  # a bad value, or option 52 inside the fields it overloads


# -- a live server -----------------------------------------------------------------------------


def _bench() -> ModuleType:
    path = REPO / "bench" / "fuzz_packets.py"
    spec = importlib.util.spec_from_file_location("fuzz_packets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_packets"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_seed_run_against_a_live_server(tmp_path: Path) -> None:
    """4,000 hostile packets (bench/fuzz_packets.py's generator) at ``pxeserver serve``."""
    fuzz = _bench()
    report = fuzz.run(4000, seed=5, probe_every=2000, workdir=tmp_path)
    print(fuzz.markdown(report))
    assert report.packets >= 4000
    assert report.crashes == 0, report.findings
    assert report.server_answering and report.probes_failed == 0, report.findings
    assert report.outside_root_served == 0 and report.files_written == 0, report.findings
    assert report.unasked_options == 0 and report.dhcp_addresses_given == 0, report.findings
    assert report.registry_nodes <= report.registry_nodes_bound
