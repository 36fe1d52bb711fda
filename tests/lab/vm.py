"""One QEMU machine on the lab's bridge: BIOS (SeaBIOS + the NIC's iPXE ROM) or UEFI (OVMF's
own PXE client, NIC option ROM off). Software emulation only: /dev/kvm is never asked for.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pxeserver.model import MAC

from . import console
from .netns import Namespace, stop_process

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# OVMF makes a boot option per NIC for each of its network clients, PXE before HTTP, and
# QEMU's boot order (-boot n, bootindex) names the NIC, not one of its options: the
# console says `starting Boot0001 "UEFI PXEv4 (MAC:…)"`. OVMF reads these fw_cfg names
# at start (the strings are in Debian's OVMF_CODE_4M.fd): with PXE off it makes no PXE
# options, and Boot0001 is "UEFI HTTPv4 (MAC:…)", its HTTP boot client.
HTTP_BOOT_ONLY = [
    "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
    "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
]  # fmt: skip


@dataclass
class VM:
    """One QEMU machine on the lab's bridge."""

    ns: Namespace
    workdir: Path  # the lab's folder: consoles, QEMU output, OVMF variables
    name: str
    mac: MAC
    # "bios": SeaBIOS + the NIC's iPXE ROM; "uefi": OVMF's own PXE client; "uefi-http":
    # OVMF's own HTTP boot client (its PXE clients switched off, see HTTP_BOOT_ONLY)
    firmware: str
    tap: str
    memory_mb: int = 384
    proc: subprocess.Popen[bytes] | None = None
    powered_on: float = 0.0  # wall-clock time of the last power-on
    boots: int = 0
    serial_logs: list[Path] = field(default_factory=list)

    @property
    def uuid(self) -> str:
        return f"5ee1ab00-0000-4000-8000-{self.mac.hex}"

    @property
    def serial_log(self) -> Path:
        return self.serial_logs[-1] if self.serial_logs else self.workdir / f"{self.name}.serial"

    def command(self, serial: Path) -> list[str]:
        net = [
            "-netdev", f"tap,id=net0,ifname={self.tap},script=no,downscript=no",
        ]  # fmt: skip
        if self.firmware == "bios":
            machine = ["-machine", "pc"]
            # QEMU's default ROM for virtio-net: Debian's ipxe-qemu build of iPXE.
            nic = ["-device", f"virtio-net-pci,netdev=net0,mac={self.mac}"]
        else:
            vars_copy = self.workdir / f"{self.name}.OVMF_VARS.fd"
            if not vars_copy.exists():
                shutil.copyfile(OVMF_VARS, vars_copy)
            machine = [
                "-machine", "q35",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            ]  # fmt: skip
            # romfile= (empty): no option ROM, so the firmware's own PXE client boots.
            nic = ["-device", f"virtio-net-pci,netdev=net0,mac={self.mac},romfile="]
            if self.firmware == "uefi-http":
                machine += HTTP_BOOT_ONLY
        return [
            QEMU,
            "-accel", "tcg",  # never KVM: /dev/kvm hangs on this kind of machine
            "-nodefaults",  # no CD-ROM for the firmware to try first, no VGA to emulate
            *machine,
            "-m", str(self.memory_mb),
            "-smp", "1",
            "-display", "none",
            "-monitor", "none",
            "-no-reboot",
            *net,
            *nic,
            "-boot", "n",
            "-serial", f"file:{serial}",
            "-name", self.name,
            "-uuid", self.uuid,  # SMBIOS UUID: what firmware sends in option 97
        ]  # fmt: skip

    def power_on(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        self.boots += 1
        serial = self.workdir / f"{self.name}.boot{self.boots}.serial"
        self.serial_logs.append(serial)
        self.powered_on = time.time()
        self.proc = self.ns.popen(
            self.command(serial), self.workdir / f"{self.name}.qemu.log", cwd=self.workdir
        )

    def kill(self) -> None:
        """Pull the plug: SIGKILL, as a machine that loses power mid-boot."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def steps(self) -> list[console.Step]:
        return console.read_steps(self.serial_log)

    def step(self, name: str) -> console.Step | None:
        found = [s for s in self.steps() if s.name == name]
        return found[-1] if found else None

    def wait_step(self, name: str, timeout: float = 30) -> console.Step | None:
        """The step's line, waiting for it: the registry can see a POST before the
        machine has printed that it sent it."""
        deadline = time.monotonic() + timeout
        while (found := self.step(name)) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        return found
