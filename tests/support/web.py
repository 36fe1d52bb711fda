"""A node booting through the Flask app's test client."""

from __future__ import annotations

from typing import Any

import yaml

MAC = "52:54:00:12:34:56"


def boot(client: Any, mac: str = MAC) -> str:
    """The node goes through ipxe and cloud-config; returns its token."""
    client.get(f"/ipxe?mac={mac}")
    doc = yaml.safe_load(client.get(f"/cloud-config?mac={mac}").text)
    units = {u["name"]: u for u in doc["coreos"]["units"]}
    content = units["pxeserver-ready.service"]["content"]
    return content.split("Authorization: Bearer ")[1].split('"')[0]
