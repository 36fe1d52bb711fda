"""Settings for tests: the profiles the tests boot, with paths inside a test's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pxeserver import config

REPO = Path(__file__).resolve().parent.parent.parent

LAB_PROFILES: dict[str, Any] = {
    "coreos": {
        "kernel": "coreos/vmlinuz",
        "initrd": ["coreos/initrd.cpio.gz"],
        "args": ["coreos.autologin", "console=ttyS0"],
        "cloud_config": "coreos.yaml.j2",
    },
    "flatcar": {
        "kernel": "flatcar/current/flatcar_production_pxe.vmlinuz",
        "initrd": ["flatcar/current/flatcar_production_pxe_image.cpio.gz"],
        "args": ["flatcar.first_boot=1"],
        "cloud_config": "flatcar.yaml.j2",
    },
    "debug": {
        "kernel": "coreos/vmlinuz",
        "initrd": ["coreos/initrd.cpio.gz"],
        "args": ["console=ttyS0", "debug", "rack={{ node.labels.get('rack', 'none') }}"],
        "cloud_config": "coreos.yaml.j2",
    },
}


def make_settings(tmp_path: Path, raw: dict[str, Any] | None = None) -> config.Settings:
    """Settings for a test: the raw mapping, with paths inside tmp_path and shipped templates."""
    raw = dict(raw or {})
    paths = {
        "data_dir": str(tmp_path / "var"),
        "assets_dir": str(tmp_path / "assets"),
        "tftp_root": str(tmp_path / "tftproot"),
        "templates_dir": str(REPO / "cloud-configs"),
        **raw.get("paths", {}),
    }
    raw["paths"] = paths
    raw.setdefault("profiles", LAB_PROFILES)
    raw.setdefault("groups", [{"name": "default", "profile": "coreos"}])
    settings, problems = config.parse(raw, "test.yaml", None)
    errors = [p for p in problems if not p.warning]
    assert not errors, errors
    return settings
