"""A node booting through the Flask app's test client."""

from __future__ import annotations

import re
from typing import Any

import yaml

from pxeserver.model import MAC as MAC_TYPE

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


def served_config(server: Any, mac: str, query: str = "") -> tuple[int, Any, str]:
    """:func:`fetch_config` against a running server (``ServerProcess.get``)."""
    status, _, script = server.get(f"/ipxe?mac={mac}{query}")
    assert status == 200, script
    return server.get(config_path(script.decode()))  # type: ignore[no-any-return]


def issued_config(client: Any, mac: str = MAC, endpoint: str = "cloud-config") -> Any:
    """The config of the boot whose script the app served last to ``mac`` (at 127.0.0.1,
    the test client's address): its URL with a secret as that script carries."""
    fetch = client.application.extensions["pxeserver"].fetch
    secret = fetch.issue(MAC_TYPE.parse(mac), "127.0.0.1")
    return client.get(f"/{endpoint}?mac={mac}&secret={secret}")
