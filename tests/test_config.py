import json
from pathlib import Path

import pytest
import yaml

from pxeserver import config
from pxeserver.errors import ConfigError


def load_text(tmp_path: Path, text: str, **overrides: object) -> config.Settings:
    path = tmp_path / "pxeserver.yaml"
    path.write_text(text)
    settings, _ = config.load(path, overrides, environ={})
    return settings


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    return [str(p) for p in info.value.problems if not p.warning]


def test_no_file_gives_the_builtin_defaults() -> None:
    settings, _ = config.load(None, {}, environ={})
    assert settings.server.http_port == 8080
    assert settings.store.backend == "sqlite"
    assert settings.sqlite_path == Path("var") / "pxeserver.db"
    assert set(settings.profiles) >= {"flatcar", "coreos"}
    assert [g.name for g in settings.groups] == ["default"]
    assert (settings.paths.templates_dir / "coreos.yaml.j2").is_file()


def test_flags_override_the_file(tmp_path: Path) -> None:
    s = load_text(
        tmp_path,
        "server: {http_port: 9000, dhcp: true}\n",
        **{
            "server.http_port": 9100,
            "server.dhcp": False,
            "store.etcd_endpoints": ["http://127.0.0.1:2379"],
            "store.backend": "etcd",
        },
    )
    assert s.server.http_port == 9100 and s.server.dhcp is False
    assert s.store.backend == "etcd" and s.store.etcd_endpoints == ("http://127.0.0.1:2379",)


def test_environment_token(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("{}\n")
    s, _ = config.load(path, {}, environ={"PXESERVER_API_TOKEN": "s3cret"})
    assert s.server.api_token == "s3cret"


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    s = load_text(tmp_path, "paths: {data_dir: state}\n")
    assert s.paths.data_dir == tmp_path / "state"


def test_two_default_groups_is_an_error(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
profiles:
  a: {kernel: k}
groups:
  - {name: one, profile: a}
  - {name: two, profile: a}
""",
    )
    assert len(found) == 1
    assert found[0].startswith(str(tmp_path / "pxeserver.yaml") + ": groups[1] (two): ")
    assert "second default group" in found[0] and " — give one of them selectors" in found[0]


def test_every_problem_is_reported_with_file_key_and_fix(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
server: {http_port: 99999, listen: nowhere, colour: blue}
store: {backend: postgres}
cluster: {hostname_pattern: "{nme}"}
profiles:
  a: {initrd: x}
groups:
  - {name: g, profile: missing, selectors: {mac: "not-a-mac"}}
""",
    )
    text = "\n".join(found)
    for key in (
        "server.http_port",
        "server.listen",
        "server.colour",
        "store.backend",
        "cluster.hostname_pattern",
        "profiles.a.kernel",
        "groups[0] (g).profile",
    ):
        assert f": {key}: " in text, key
    assert all(" — " in line for line in found)


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    found = problems(tmp_path, "server:\n  http_port: [\n")
    assert "line" in found[0] and "not valid YAML" in found[0]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        config.load(tmp_path / "nope.yaml", {}, environ={})


def test_selector_values_are_normalised(tmp_path: Path) -> None:
    s = load_text(
        tmp_path,
        yaml.safe_dump(
            {
                "profiles": {"a": {"kernel": "k"}},
                "groups": [
                    {
                        "name": "g",
                        "profile": "a",
                        "selectors": {"mac": "52-54-00-AA-BB-CC", "arch": "X86_64"},
                    }
                ],
            }
        ),
    )
    assert s.groups[0].selectors == {"mac": ("52:54:00:aa:bb:cc",), "arch": ("x86_64",)}


def test_hostname_pattern_must_make_distinct_valid_names(tmp_path: Path) -> None:
    assert "same name" in "\n".join(problems(tmp_path, "cluster: {hostname_pattern: worker}\n"))
    assert "not a valid hostname" in "\n".join(
        problems(tmp_path, "cluster: {hostname_pattern: 'Node_{index}'}\n")
    )
    s = load_text(tmp_path, "cluster: {hostname_pattern: 'w-{mac_suffix}'}\n")
    assert s.cluster.hostname_pattern == "w-{mac_suffix}"


def test_peer_urls_default_to_port_2380() -> None:
    c = config.ClusterSettings(etcd_endpoints=("http://10.0.0.1:2379", "http://10.0.0.2:2379"))
    assert config.peer_urls(c) == ("http://10.0.0.1:2380", "http://10.0.0.2:2380")


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\r", "\x00"])
def test_line_breaks_and_control_characters_in_values_are_refused(
    tmp_path: Path, char: str
) -> None:
    """Settings values that reach templates: each refused, by its key."""
    c = json.dumps(char)[1:-1]  # YAML double-quoted escapes are JSON's
    found = problems(
        tmp_path,
        f"""
cluster:
  fleet_metadata: {{region: "lab{c}x"}}
  domain: "example{c}.test"
  ssh_authorized_keys: ["ssh-ed25519 AAAA{c}evil"]
profiles:
  p: {{kernel: k, metadata: {{etcd_binary: "bin/etcd{c}x", nested: {{list: ["a{c}b"]}}}}}}
groups:
  - name: g
    profile: p
    selectors: {{rack: "r1{c}x"}}
    metadata: {{"key{c}": v}}
  - {{name: d, profile: p}}
""",
    )
    text = "\n".join(found)
    for key in (
        "cluster.fleet_metadata.region",
        "cluster.domain",
        "cluster.ssh_authorized_keys[0]",
        "profiles.p.metadata.etcd_binary",
        "profiles.p.metadata.nested.list[0]",
        "groups[0] (g).selectors.rack",
        "groups[0] (g).metadata",
    ):
        assert f": {key}: " in text, (key, text)
    assert f"U+{ord(char):04X}" in text


def test_fleet_metadata_from_settings_follows_the_label_rules(tmp_path: Path) -> None:
    found = problems(tmp_path, 'cluster: {fleet_metadata: {region: "a,b=c", "bad key!": x}}\n')
    text = "\n".join(found)
    assert ": cluster.fleet_metadata.region: " in text
    assert ": cluster.fleet_metadata: " in text and "bad key!" in text
    # positive control: what labels allow, settings allow
    assert load_text(tmp_path, "cluster: {fleet_metadata: {region: eu west-1}}\n")
