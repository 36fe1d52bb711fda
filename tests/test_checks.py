"""pxeserver.checks: what ``pxeserver check`` and every start report, and how each
missing file is named with the command that gets it (or why none can)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxeserver import checks, config

from .support.settings import make_settings

FLATCAR = "flatcar/current/flatcar_production_pxe.vmlinuz"


@pytest.fixture(autouse=True)
def run_as(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command as a user ran it: hints name it that way (pxeserver.hints)."""
    monkeypatch.setattr("sys.argv", [".venv/bin/pxeserver", "serve"])


def by_key(problems: list[config.Problem]) -> dict[str, config.Problem]:
    return {p.key: p for p in problems}


def test_missing_files_are_named_with_the_command_that_gets_them(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        {
            "cluster": {"etcd_endpoints": []},
            "profiles": {
                "flatcar": {"kernel": FLATCAR, "initrd": ["flatcar-arm64/current/i.cpio.gz"]},
                "coreos": {"kernel": "coreos/vmlinuz", "initrd": []},
                "own": {"kernel": "mine/vmlinuz", "cloud_config": "nosuch.yaml.j2"},
            },
            "groups": [{"name": "default", "profile": "flatcar"}],
        },
    )
    found = by_key(checks.check_settings(settings))
    assets = tmp_path / "assets"
    kernel = found["profiles.flatcar.kernel"]
    assert kernel.warning and kernel.what == f"{assets / FLATCAR} does not exist"
    assert kernel.fix == "fetch it: .venv/bin/pxeserver assets fetch flatcar --config test.yaml"
    assert found["profiles.flatcar.initrd"].fix == (
        "fetch it: .venv/bin/pxeserver assets fetch flatcar --arch arm64 --config test.yaml"
    )
    # CoreOS: no command fetches it (it used to suggest Flatcar's fetch for it)
    coreos = found["profiles.coreos.kernel"].fix
    assert coreos.startswith("CoreOS Container Linux cannot be fetched: its images went offline")
    assert found["profiles.own.kernel"].fix == "put the file there or fix the path"
    template = found["profiles.own.cloud_config"]
    assert not template.warning and "template nosuch.yaml.j2 not found" in template.what
    assert template.fix.startswith("write ") and template.fix.endswith(
        "nosuch.yaml.j2 or name a template that exists"
    )
    loaders = found["paths.tftp_root"]
    assert loaders.what == f"{tmp_path / 'tftproot'} does not exist"
    assert loaders.fix.startswith("run .venv/bin/pxeserver assets ipxe --config test.yaml to copy")


def test_a_settings_file_is_named_in_the_commands(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        f"paths: {{assets_dir: {tmp_path}/assets, tftp_root: {tmp_path}}}\n"
        "cluster: {etcd_endpoints: []}\n"
    )
    settings, _ = config.load(path)
    (tmp_path / "undionly.kpxe").write_bytes(b"x")  # some loaders there, not all
    found = by_key(checks.check_settings(settings))
    assert found["profiles.flatcar.kernel"].fix == (
        f"fetch it: .venv/bin/pxeserver assets fetch flatcar --config {path}"
    )
    assert found["paths.tftp_root"].what == f"{tmp_path} lacks ipxe.efi, snponly.efi"
    assert f"assets ipxe --config {path} " in found["paths.tftp_root"].fix


def test_the_start_report_is_one_block_with_every_problem(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, {"cluster": {"etcd_endpoints": []}})
    problems = checks.check_settings(settings)
    block = checks.start_report(settings, problems).splitlines()
    assert block[0] == (
        f"test.yaml: {len(problems)} problems found at start (`.venv/bin/pxeserver check "
        "--config test.yaml` "
        "lists them too):"
    )
    assert len(block) == len(problems) + 1
    assert all(line.startswith("  profiles.") or line.startswith("  paths.") for line in block[1:])


def test_a_complete_setup_has_nothing_to_report(tmp_path: Path) -> None:
    """The positive control: with every file there, no problem is made up."""
    assets = tmp_path / "assets" / "coreos"
    assets.mkdir(parents=True)
    (assets / "vmlinuz").write_bytes(b"k")
    (assets / "initrd.cpio.gz").write_bytes(b"i")
    root = tmp_path / "tftproot"
    root.mkdir()
    for name in checks.BOOT_LOADERS:
        (root / name).write_bytes(b"l")
    profiles = {"coreos": {"kernel": "coreos/vmlinuz", "initrd": ["coreos/initrd.cpio.gz"],
                           "cloud_config": "coreos.yaml.j2"}}  # fmt: skip
    settings = make_settings(tmp_path, {"cluster": {"etcd_endpoints": []}, "profiles": profiles})
    assert checks.check_settings(settings) == []
