"""``serve`` says at start what will fail, and logs the first 404 for a missing file.

Found by a new user: ``serve`` started without a word with the default profile's kernel
and initrd missing (only ``pxeserver check`` said so), and a machine asking for them got
404s that the server never logged while it boot-looped.
"""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

from ..support.net import free_port
from ..support.server import ServerProcess

MAC = "52:54:00:5e:00:01"
KERNEL = "flatcar/current/flatcar_production_pxe.vmlinuz"


def test_the_start_names_each_missing_file_and_the_first_404_is_logged(tmp_path: Path) -> None:
    settings = {
        "server": {"listen": "127.0.0.1", "dhcp": False},
        "paths": {"tftp_root": str(tmp_path / "no-tftproot"), "assets_dir": str(tmp_path / "a")},
        "cluster": {"etcd_endpoints": []},
        "profiles": {
            "flatcar": {
                "kernel": KERNEL,
                "initrd": ["flatcar/current/initrd.cpio.gz"],
                "cloud_config": "flatcar.yaml.j2",
            },
            "old": {"kernel": "coreos/vmlinuz", "cloud_config": "nosuch.yaml.j2"},
        },
        "groups": [{"name": "default", "profile": "flatcar"}],
    }
    tftp = str(free_port(socket.SOCK_DGRAM))
    server = ServerProcess(
        tmp_path, settings=settings, args=["--workers", "1", "--tftp-port", tftp]
    )
    server.start()
    try:
        assert server.get(f"/ipxe?mac={MAC}")[0] == 200  # the machine's script, then its kernel
        for _ in range(3):  # a boot loop asks again and again
            assert server.get(f"/assets/{KERNEL}")[0] == 404
    finally:
        server.stop()
    log = server.log()
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len(warnings) == 2, log  # the start's block, and the first 404
    block = log[log.index(warnings[0]) :].splitlines()
    # The commands name pxeserver as this server was started (pxeserver.hints).
    program = f"{sys.executable} -m pxeserver"
    assert block[0].endswith(f"{server.config}: 5 problems found at start (`{program} check "
                             f"--config {server.config}` lists them too):"), block[0]  # fmt: skip
    lines = block[1:6]
    assert all(line.startswith("  ") for line in lines), block
    text = "\n".join(lines)
    assert (
        f"  profiles.flatcar.kernel: {tmp_path / 'a' / KERNEL} does not exist — fetch it: " in text
    )
    assert "  profiles.old.kernel: " in text and "CoreOS Container Linux cannot be fetched" in text
    assert "  profiles.old.cloud_config: error: template nosuch.yaml.j2 not found" in text
    assert f"  paths.tftp_root: {tmp_path / 'no-tftproot'} does not exist — run {program} " in text
    miss = warnings[1]
    assert re.search(
        rf"WARNING pxeserver\.web\.files: {MAC} at 127\.0\.0\.1 asked for {KERNEL}, which is not "
        rf"in {tmp_path / 'a'} \(404; the next 404s for it are not logged\): fetch it: "
        rf"{re.escape(program)} assets fetch flatcar --config {server.config}$",
        miss,
    ), miss
