"""TFTP and ProxyDHCP as ``pxeserver serve`` runs them in its main process: their ports
claimed (one server per port, :mod:`pxeserver.host.claims`) and bound together, before
privileges are dropped, then started and stopped together.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from .boot import BootService
from .config import Settings
from .host.claims import PortClaim
from .logs import configure


def listen_address(settings: Settings) -> str:
    """The address UDP services bind: the interface's, if one is named, else ``listen``."""
    from .host.netif import interface_address

    if settings.server.interface:
        return interface_address(settings.server.interface)
    return settings.server.listen


def http_base(settings: Settings) -> Callable[[str], str]:
    """How a machine that reached us at a local address finds the HTTP side."""

    def base(local: str) -> str:
        if settings.server.base_url:
            return settings.server.base_url
        return f"http://{local}:{settings.server.http_port}"

    return base


def tftp_workers() -> int:
    """Processes that run TFTP transfers: one per core, at most 4.

    One Python thread could not keep up with tftpd-hpa's process per transfer on 32
    concurrent transfers (docs/BENCHMARKS.md); transfer loops in their own processes use
    every core and never share an interpreter lock with ProxyDHCP or the reaper.
    """
    return max(1, min(os.cpu_count() or 1, 4))


class UdpServices:
    """TFTP and ProxyDHCP: sockets bound in the main process, started and stopped together.

    The listeners (requests, policy, ProxyDHCP answers) are threads of the main process
    beside the reaper; TFTP transfers run in :func:`tftp_workers` spawned processes, which
    are started after privileges are dropped.
    """

    def __init__(self, settings: Settings, service: BootService) -> None:
        self.settings = settings
        self.service = service
        self.services: list[Any] = []
        self.claims: list[PortClaim] = []

    def bind(self) -> None:
        """Claim and bind every socket, or raise PxeError with what to do (a port that
        another pxeserver or another program has, a privileged port)."""
        from .host.netif import bind_error

        address = listen_address(self.settings)
        interface = self.settings.server.interface
        claimed = address + (f"%{interface}" if interface else "")
        for name, service, ports in self._services(address):
            try:
                for port in ports:
                    self._claim(PortClaim("udp", claimed, port))
                service.bind()
            except OSError as exc:
                self.close()
                # the port a claim or bind failed on (ProxyDHCP binds two)
                failed = getattr(exc, "port", None) or getattr(service, "failed_port", None)
                port = failed if failed in ports else next(iter(ports))
                raise bind_error(name, address, port, exc, ports[port]) from exc
            self.services.append(service)

    def _claim(self, claim: PortClaim) -> None:
        claim.acquire()
        self.claims.append(claim)

    def _services(self, address: str) -> list[tuple[str, Any, dict[int, str]]]:
        """The services the settings ask for: name, server, and its ports with the flag
        that chooses each."""
        s = self.settings.server
        found: list[tuple[str, Any, dict[int, str]]] = []
        if s.tftp:
            found.append(("TFTP", self._tftp(address), {s.tftp_port: "--tftp-port"}))
        if s.dhcp:
            ports = {s.dhcp_port: "--dhcp-port", s.pxe_port: "--pxe-port"}
            found.append(("ProxyDHCP", self._dhcp(address), ports))
        return found

    def _tftp(self, address: str) -> Any:
        from .tftp.server import TftpServer

        s, limits = self.settings.server, self.settings.limits
        return TftpServer(
            self.settings.paths.tftp_root,
            address=address,
            port=s.tftp_port,
            assets_dir=self.settings.paths.assets_dir,
            boot=self.service,
            base_url=http_base(self.settings),
            max_transfers=limits.tftp_sessions,
            max_per_client=limits.tftp_sessions_per_client,
            client_rate=float(limits.tftp_requests_per_client),
            workers=tftp_workers(),
            # Logging in the spawned transfer processes as here; a light module to
            # import there (see pxeserver/logs.py).
            worker_init=functools.partial(configure, s.log_format, s.log_level),
        )

    def _dhcp(self, address: str) -> Any:
        from .dhcp.proxy import ProxyDhcp

        s = self.settings.server
        return ProxyDhcp(
            self.service,
            address=address,
            interface=s.interface,
            dhcp_port=s.dhcp_port,
            pxe_port=s.pxe_port,
            tftp_root=self.settings.paths.tftp_root,
            uefi_loader=s.uefi_loader,
            http_base=http_base(self.settings),
        )

    def close(self) -> None:
        """Release the sockets of services bound but never started, and the claims."""
        for service in self.services:
            service.close()
        self.services = []
        self._release()

    def _release(self) -> None:
        for claim in self.claims:
            claim.release()
        self.claims = []

    def start(self) -> None:
        self.service.start_background()
        for service in self.services:
            service.start()

    def stop(self) -> None:
        for service in self.services:
            service.stop()
        self.service.stop_background()
        self._release()
