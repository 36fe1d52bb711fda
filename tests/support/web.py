"""A node booting through the Flask app's test client."""

from __future__ import annotations

import re
from typing import Any

import yaml

MAC = "52:54:00:12:34:56"


def boot(client: Any, mac: str = MAC) -> str:
    """The node goes through ipxe and cloud-config; returns its token."""
    doc = yaml.safe_load(fetch_config(client, mac).text)
    units = {u["name"]: u for u in doc["coreos"]["units"]}
    content = units["pxeserver-ready.service"]["content"]
    return content.split("Authorization: Bearer ")[1].split('"')[0]


def config_path(script: str) -> str:
    """The config URL (path and query, with its one-time secret) an iPXE script names."""
    match = re.search(
        r"(?:cloud-config-url|ignition\.config\.url)=\S*?(/(?:cloud-config|ignition)\?\S+)", script
    )
    assert match, f"no config URL in the script:\n{script}"
    return match.group(1)


def fetch_config(client: Any, mac: str = MAC, **kwargs: Any) -> Any:
    """What a machine does: its iPXE script, then the config URL that script names
    (``kwargs`` go to both requests: the same client address)."""
    script = client.get(f"/ipxe?mac={mac}", **kwargs).text
    return client.get(config_path(script), **kwargs)
