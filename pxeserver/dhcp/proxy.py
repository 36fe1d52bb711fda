"""ProxyDHCP: tells PXE firmware which boot loader to fetch, beside the site's DHCP server.

It answers PXE clients only (option 60 ``PXEClient…``/``HTTPClient…``, or iPXE's user class),
never hands out an address (yiaddr 0), and never answers a MAC the settings exclude or that
no group selects (:meth:`pxeserver.boot.BootService.boot_refusal`, decided from memory so the
loop never waits for the store). The boot file follows the firmware (option 93, RFC 4578):

=====================  =====================================================================
arch 0 (BIOS)          ``undionly.kpxe`` over TFTP
arch 6, 7, 9 (UEFI)    ``snponly.efi`` or ``ipxe.efi`` over TFTP (``server.uefi_loader``)
arch 11 (arm64 UEFI)   ``ipxe-arm64.efi`` over TFTP if it is in the TFTP root, else ignored
arch 16 (UEFI HTTP)    ``http://<server>:<port>/boot/ipxe.efi``, option 60 ``HTTPClient``
iPXE (77/175)          ``http://<server>:<port>/boot.ipxe``, the chain script
anything else          ignored, with a log line that says why
=====================  =====================================================================

Two sockets: port 67 (DISCOVER → OFFER; a REQUEST naming us → ACK; a REQUEST to the site's
server only teaches us the client's address) and port 4011 (REQUEST/INFORM → ACK: the PXE
boot-server step UEFI firmware and iPXE take after a ProxyDHCP offer).

Where replies go: to the relay (``giaddr``) when there is one; to the sender's address and
port when the sender has an address (the port 4011 step, relays, a client with ``ciaddr``,
and tests on loopback); otherwise broadcast to port 68 out of the interface the request came
in on, as the firmware has no address yet. Bad packets are dropped and counted; nothing a
packet holds stops the loop. Sightings (arch, UUID, IP) go to the boot policy, which writes
them to the registry in the background.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .. import metrics
from ..host.netif import address_of_index, enlarge_receive_buffer, interface_of, is_loopback
from ..model import MAC, Machine
from ..ratelimit import LogBudget, left_out
from . import packets as dp

log = logging.getLogger(__name__)

IP_PKTINFO = 8  # Linux <netinet/in.h>; Python 3.11's socket module does not export it
_PKTINFO = struct.Struct("=I4s4s")
CLIENT_PORT = 68
SERVER_PORT = 67
ARM64_LOADER = "ipxe-arm64.efi"
LOG_WINDOW = 60.0

# Option 93 → (what the log calls it, iPXE's buildarch, iPXE's platform).
ARCHES: dict[int, tuple[str, str, str]] = {
    0: ("BIOS", "i386", "pcbios"),
    6: ("UEFI x86", "i386", "efi"),
    7: ("UEFI x86-64", "x86_64", "efi"),
    9: ("UEFI x86-64", "x86_64", "efi"),
    11: ("UEFI arm64", "arm64", "efi"),
    16: ("UEFI x86-64 HTTP boot", "x86_64", "efi"),
}


class DhcpBoot(Protocol):
    """What ProxyDHCP asks the boot policy (:class:`pxeserver.boot.BootService`)."""

    def boot_refusal(self, machine: Machine) -> str | None: ...

    def note_dhcp(self, machine: Machine, detail: str) -> None: ...


@dataclass(frozen=True)
class Offer:
    """What to tell a PXE client."""

    boot_file: str
    vendor_class: str  # PXEClient or HTTPClient
    firmware: str  # for the log and the node's timeline
    # BIOS PXE ROMs and iPXE take the file from the offer when told to skip boot-server
    # discovery (option 43, 6 = 8). Some UEFI firmware ignores an offer that says so; it
    # is told nothing and asks again on port 4011, where it gets an ACK with the file.
    bypass_discovery: bool = False


@dataclass(frozen=True)
class Loaders:
    """What the server can hand out: the UEFI loader chosen, whether arm64 exists, where HTTP is."""

    uefi_loader: str = "snponly.efi"
    arm64: bool = False
    http_base: Callable[[str], str] = lambda host: f"http://{host}:8080"


def is_pxe_client(packet: dp.DhcpPacket) -> bool:
    vendor = packet.vendor_class
    return vendor.startswith(("PXEClient", "HTTPClient")) or packet.is_ipxe


def choose(packet: dp.DhcpPacket, server_ip: str, loaders: Loaders) -> Offer | str:
    """The boot file for a PXE client, or why it gets none. Pure."""
    if packet.is_ipxe:
        return Offer(f"{loaders.http_base(server_ip)}/boot.ipxe", "PXEClient", "iPXE", True)
    arch = packet.client_arch
    if arch is None:
        # PXE 2.1 clients all send option 93; a PXEClient without it is BIOS by the spec.
        arch = 0 if packet.vendor_class.startswith("PXEClient") else -1
    known = ARCHES.get(arch)
    if known is None:
        return f"unknown client architecture {arch} (option 93); no boot loader for it"
    name = f"{known[0]} (arch {arch})"
    if arch == 0:
        return Offer("undionly.kpxe", "PXEClient", name, True)
    if arch in (6, 7, 9):
        return Offer(loaders.uefi_loader, "PXEClient", name)
    if arch == 11:
        if not loaders.arm64:
            return f"{name}: no {ARM64_LOADER} in the TFTP root (Debian's ipxe ships none)"
        return Offer(ARM64_LOADER, "PXEClient", name)
    # arch 16: UEFI HTTP boot wants a URL and option 60 HTTPClient in the answer
    return Offer(f"{loaders.http_base(server_ip)}/boot/ipxe.efi", "HTTPClient", name)


def machine_of(packet: dp.DhcpPacket, mac: MAC) -> Machine:
    arch = ARCHES.get(packet.client_arch if packet.client_arch is not None else -1)
    ip = packet.ciaddr if packet.ciaddr != "0.0.0.0" else packet.requested_ip
    return Machine(mac, packet.client_uuid, arch[1] if arch else None,
                   arch[2] if arch else None, ip)  # fmt: skip


class ProxyDhcp:
    """ProxyDHCP on ``dhcp_port`` (67) and ``pxe_port`` (4011). bind(), start(), stop()."""

    def __init__(
        self,
        boot: DhcpBoot,
        *,
        address: str = "0.0.0.0",
        interface: str | None = None,
        dhcp_port: int = SERVER_PORT,
        pxe_port: int = 4011,
        tftp_root: Path | None = None,
        uefi_loader: str = "snponly.efi",
        http_base: Callable[[str], str] | None = None,
    ) -> None:
        self.boot = boot
        self.address = address
        self.interface = interface
        self.ports = {"dhcp": dhcp_port, "pxe": pxe_port}
        self.tftp_root = tftp_root
        self.uefi_loader = uefi_loader
        self.http_base = http_base or (lambda host: f"http://{host}:8080")
        self.counters = {"received": 0, "answered": 0, "ignored": 0, "bad": 0}
        self.sockets: dict[str, socket.socket] = {}
        self.failed_port = dhcp_port
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._logged: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._log_budget = LogBudget()  # lines a second: a flood of random MACs is summarised
        self._log_lock = threading.Lock()

    # -- life cycle ------------------------------------------------------------------------

    def _bind_target(self) -> tuple[str, str | None]:
        """Where to bind so broadcasts arrive: the wildcard address tied to the interface,
        or, on loopback (tests, development), the address itself."""
        if self.interface:
            return "0.0.0.0", self.interface
        if self.address == "0.0.0.0" or is_loopback(self.address):
            return self.address, None
        return "0.0.0.0", interface_of(self.address)

    def bind(self) -> None:
        host, device = self._bind_target()
        try:
            for name, port in self.ports.items():
                self.failed_port = port  # for the caller's error message
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.sockets[name] = s
                if name == "dhcp":
                    # Broadcasts reach every socket bound with SO_REUSEADDR: the site's
                    # DHCP server may listen on port 67 of the same machine. Port 4011
                    # is ours alone: bound without it, another program's is refused.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                enlarge_receive_buffer(s)  # a rack's DISCOVERs arrive together
                if device:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
                s.bind((host, port))
                s.settimeout(0.5)
                self.ports[name] = s.getsockname()[1]
        except OSError:
            self.close()
            raise

    def start(self) -> ProxyDhcp:
        if not self.sockets:
            self.bind()
        for name, s in self.sockets.items():
            t = threading.Thread(target=self._serve, args=(name, s), name=f"dhcp-{name}",
                                 daemon=True)  # fmt: skip
            t.start()
            self._threads.append(t)
        log.info("ProxyDHCP on %s ports %d and %d%s", self.address, self.ports["dhcp"],
                 self.ports["pxe"], f" ({self.interface})" if self.interface else "")  # fmt: skip
        return self

    def stop(self) -> None:
        self._stopping.set()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        self.close()

    def close(self) -> None:
        for s in self.sockets.values():
            s.close()
        self.sockets = {}

    # -- the loop --------------------------------------------------------------------------

    def _serve(self, name: str, sock: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                data, anc, _, source = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (TimeoutError, InterruptedError):
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                log.debug("ProxyDHCP: receive failed: %s", exc)
                continue
            self.counters["received"] += 1
            try:
                self._on_packet(sock, name == "pxe", data, anc, source)
            except Exception:  # a bug, not a packet: say so and keep serving
                self.counters["bad"] += 1
                log.exception("ProxyDHCP: unexpected error on a packet from %s", source[0])

    def _on_packet(self, sock: socket.socket, pxe_port: bool, data: bytes,
                   anc: list[tuple[int, int, bytes]], source: tuple[str, int]) -> None:  # fmt: skip
        packet = self._pxe_request(data, source)
        if packet is None or packet.mac is None or packet.message_type is None:
            return
        mac, kind = packet.mac, packet.message_type
        ifindex, local = self._arrival(anc)
        server_ip = self._server_ip(local, ifindex)
        answer = self._answer_kind(packet, kind, pxe_port, server_ip)
        machine = machine_of(packet, mac)
        refusal = self.boot.boot_refusal(machine)
        if refusal is not None:
            self.counters["ignored"] += 1
            excluded = refusal.startswith("excluded")
            metrics.dhcp_ignored.labels(reason="excluded" if excluded else "no-group").inc()
            self._log_once(mac, refusal, f"ProxyDHCP {mac}: not answering: {refusal}")
            return
        if answer is None:
            if kind == dp.REQUEST and machine.ip:
                # A REQUEST to the site's DHCP server: no answer from us, but now we know
                # the address this MAC will fetch its boot loader from.
                self.boot.note_dhcp(machine, f"ProxyDHCP saw it take {machine.ip}")
            self.counters["ignored"] += 1
            return
        offer = choose(packet, server_ip, self._loaders())
        if isinstance(offer, str):
            self.counters["ignored"] += 1
            metrics.dhcp_ignored.labels(reason="unsupported-arch").inc()
            self._log_once(mac, offer, f"ProxyDHCP {mac}: ignored: {offer}")
            return
        reply = dp.build_reply(packet, message_type=answer, server_ip=server_ip,
                               boot_file=offer.boot_file, vendor_class=offer.vendor_class,
                               bypass_discovery=offer.bypass_discovery
                               and answer == dp.OFFER)  # fmt: skip
        if self._answered(sock, reply, packet, mac, source, ifindex):
            port = "4011" if pxe_port else "67"
            metrics.dhcp_offers.labels(port=port).inc()
            what = dp.MESSAGE_NAMES.get(kind, str(kind))
            detail = f"ProxyDHCP {what} on port {port}: {offer.firmware} → {offer.boot_file}"
            allowed, skipped = self._log_budget.allow()
            if allowed:
                log.info("%s %s%s", mac, detail, left_out(skipped))
            self.boot.note_dhcp(machine, detail)

    def _pxe_request(self, data: bytes, source: tuple[str, int]) -> dp.DhcpPacket | None:
        """The packet, if it is a request from a PXE client; otherwise None (counted)."""
        try:
            packet = dp.parse(data)
        except dp.PacketError as exc:
            self.counters["bad"] += 1
            metrics.dhcp_ignored.labels(reason="malformed").inc()
            log.debug("ProxyDHCP: dropped a bad packet from %s: %s", source[0], exc)
            return None
        if packet.op != dp.BOOTREQUEST or packet.mac is None or packet.message_type is None:
            self.counters["bad"] += 1
            metrics.dhcp_ignored.labels(reason="malformed").inc()
            return None
        if not is_pxe_client(packet):
            self.counters["ignored"] += 1
            metrics.dhcp_ignored.labels(reason="not-pxe").inc()
            log.debug("ProxyDHCP %s: not a PXE client (option 60 %r); ignored", packet.mac,
                      packet.vendor_class[:40])  # fmt: skip
            return None
        return packet

    def _answered(self, sock: socket.socket, reply: bytes, packet: dp.DhcpPacket, mac: MAC,
                  source: tuple[str, int], ifindex: int) -> bool:  # fmt: skip
        """Send ``reply``; False (counted, logged) if it cannot go where it must."""
        try:
            self._send(sock, reply, packet, source, ifindex)
        except OSError as exc:  # e.g. a relay address (giaddr) no packet can go to
            self.counters["bad"] += 1
            metrics.dhcp_ignored.labels(reason="unsendable").inc()
            self._log_once(mac, "unsendable", f"ProxyDHCP {mac}: cannot answer to relay "
                           f"{packet.giaddr} / {source[0]}: {exc.strerror or exc}")  # fmt: skip
            return False
        self.counters["answered"] += 1
        return True

    @staticmethod
    def _answer_kind(packet: dp.DhcpPacket, kind: int, pxe_port: bool,
                     server_ip: str) -> int | None:  # fmt: skip
        """OFFER, ACK, or None (say nothing)."""
        if pxe_port:
            return dp.ACK if kind in (dp.REQUEST, dp.INFORM) else None
        if kind == dp.DISCOVER:
            return dp.OFFER
        server_id = packet.options.get(dp.OPT_SERVER_ID)
        if kind == dp.REQUEST and server_id == socket.inet_aton(server_ip):
            return dp.ACK
        return None

    def _loaders(self) -> Loaders:
        arm64 = bool(self.tftp_root and (self.tftp_root / ARM64_LOADER).is_file())
        return Loaders(self.uefi_loader, arm64, self.http_base)

    @staticmethod
    def _arrival(anc: list[tuple[int, int, bytes]]) -> tuple[int, str]:
        """The interface index and local address a packet arrived on (IP_PKTINFO)."""
        for level, kind, data in anc:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
                index, spec_dst, _ = _PKTINFO.unpack_from(data)
                return int(index), socket.inet_ntoa(spec_dst)
        return 0, "0.0.0.0"

    def _server_ip(self, local: str, ifindex: int) -> str:
        """Our address as the client sees it: the configured one, else where it arrived."""
        if self.address != "0.0.0.0":
            return self.address
        if local not in ("0.0.0.0", "255.255.255.255"):
            return local
        return address_of_index(ifindex) or "0.0.0.0"

    def _send(self, sock: socket.socket, reply: bytes, packet: dp.DhcpPacket,
              source: tuple[str, int], ifindex: int) -> None:  # fmt: skip
        if packet.giaddr != "0.0.0.0":
            sock.sendto(reply, (packet.giaddr, SERVER_PORT))
        elif source[0] != "0.0.0.0":
            sock.sendto(reply, source)
        else:
            # The client has no address: broadcast, out of the interface it came in on.
            pktinfo = _PKTINFO.pack(ifindex, bytes(4), bytes(4))
            sock.sendmsg([reply], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)],
                         0, ("255.255.255.255", CLIENT_PORT))  # fmt: skip

    def _log_once(self, mac: MAC, reason: str, line: str) -> None:
        """One line per MAC and reason a minute: firmware retries, floods repeat."""
        key = (mac.value, reason)
        now = time.monotonic()
        with self._log_lock:
            last = self._logged.get(key)
            self._logged[key] = now
            self._logged.move_to_end(key)
            while len(self._logged) > 4096:
                self._logged.popitem(last=False)
        if last is None or now - last >= LOG_WINDOW:
            allowed, skipped = self._log_budget.allow()
            if allowed:
                log.info("%s%s", line, left_out(skipped))
