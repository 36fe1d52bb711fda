import pytest
import yaml

from pxeserver.render.cloudconfig import validate

GOOD = """#cloud-config
hostname: node-001
ssh_authorized_keys:
  - ssh-ed25519 AAAA test
users:
  - name: core
    groups: [docker]
write_files:
  - path: /etc/x
    permissions: "0644"
    encoding: b64
    content: aGVsbG8=
coreos:
  etcd2: {proxy: "on", listen-client-urls: "http://127.0.0.1:2379"}
  fleet: {etcd_servers: "http://127.0.0.1:2379", metadata: "rack=r1"}
  update: {reboot-strategy: etcd-lock}
  units:
    - name: fleet.service
      command: start
    - name: x.timer
      enable: true
      drop-ins:
        - name: 10-x.conf
          content: "[Timer]"
"""


def test_a_good_config_has_no_errors() -> None:
    doc, errors = validate(GOOD)
    assert errors == []
    assert doc["hostname"] == "node-001"


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda t: t.replace("#cloud-config", "#cloud-confg"), "first line"),
        (lambda t: t.replace("command: start", "command: begin", 1), "command: 'begin'"),
        (lambda t: t.replace('permissions: "0644"', "permissions: 0800"), "octal mode"),
        (lambda t: t.replace("encoding: b64", "encoding: rot13"), "encoding: 'rot13'"),
        (lambda t: t.replace("  fleet:", "  flet:"), "coreos.flet: unknown key"),
        (
            lambda t: t.replace("etcd_servers", "etcd_server"),
            "coreos.fleet.etcd_server: unknown key",
        ),
        (lambda t: t.replace("etcd-lock", "sometimes"), "reboot-strategy"),
        (lambda t: t.replace("hostname: node-001", "hostname: Node_1"), "not a valid host name"),
        (lambda t: t.replace("  - name: core", "  - gecos: core"), "users[0].name: is required"),
        (lambda t: t.replace("path: /etc/x", "path: etc/x"), "absolute path"),
        (lambda t: t.replace("name: 10-x.conf", "name: 10-x"), "must end in .conf"),
        (
            lambda t: t.replace("enable: true", "enable: yes please"),
            "enable: must be true or false",
        ),
        (lambda t: t + "bogus: 1\n", "bogus: unknown key"),
        (lambda t: t + "    - name: fleet.service\n", "listed twice"),
        (lambda t: t.replace("hostname: node-001", "hostname: [unclosed"), "not valid YAML"),
    ],
)
def test_each_rule_catches_its_mistake(change, expected) -> None:  # type: ignore[no-untyped-def]
    _, errors = validate(change(GOOD))
    assert any(expected in e for e in errors), errors


def test_not_a_mapping() -> None:
    _, errors = validate("#cloud-config\n- a\n- b\n")
    assert errors == ["the document must be a mapping of keys"]


def test_errors_do_not_hide_each_other() -> None:
    bad = GOOD.replace("command: start", "command: go", 1).replace("etcd-lock", "never")
    _, errors = validate(bad)
    assert len(errors) == 2


def test_yaml_is_really_parsed() -> None:
    doc, _ = validate(GOOD)
    assert doc == yaml.safe_load(GOOD)


def test_plain_scalars_fill_string_fields_as_written() -> None:
    # coreos-cloudinit reads a string field as written: 0644 is not the integer 420, on
    # is not true (its own validator accepts both; tests/test_cloudconfig_engine.py).
    text = GOOD.replace('permissions: "0644"', "permissions: 0644").replace('"on"', "on")
    assert validate(text)[1] == []


def test_errors_name_their_line() -> None:
    _, errors = validate(GOOD.replace("command: start", "command: begin", 1))
    line = GOOD.splitlines().index("      command: start") + 1
    assert errors == [
        f"line {line}: coreos.units[0].command: 'begin' is not one of start, stop, restart, "
        "reload, try-restart, reload-or-restart, reload-or-try-restart"
    ]
