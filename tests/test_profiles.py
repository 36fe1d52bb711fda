from pxeserver.profiles import Group, decide, machine_facts


def facts(**kw: str) -> dict[str, str]:
    labels = kw.pop("labels", {})
    base = {
        "mac": "52:54:00:12:34:56",
        "uuid": None,
        "arch": None,
        "platform": None,
        "hostname": None,
    }
    base.update(kw)
    return machine_facts(labels=labels, **base)  # type: ignore[arg-type]


GROUPS = (
    Group("default", "coreos"),
    Group("efi", "flatcar", {"platform": ("efi",)}),
    Group("rack1-efi", "debug", {"platform": ("efi",), "rack": ("r1",)}),
    Group("one-mac", "debug", {"mac": ("52:54:00:00:00:01",)}),
)


def test_default_group_when_nothing_else_matches() -> None:
    d = decide(GROUPS, facts())
    assert d is not None and d.profile == "coreos" and d.group and d.group.name == "default"


def test_all_selectors_must_match() -> None:
    d = decide(GROUPS, facts(platform="efi", labels={"rack": "r2"}))
    assert d is not None and d.group and d.group.name == "efi"


def test_most_selectors_wins() -> None:
    d = decide(GROUPS, facts(platform="efi", labels={"rack": "r1"}))
    assert d is not None and d.group and d.group.name == "rack1-efi"
    assert "all 2 selectors match" in d.reason


def test_tie_goes_to_the_first_group_listed_and_says_so() -> None:
    groups = (
        Group("b", "coreos", {"arch": ("x86_64",)}),
        Group("a", "flatcar", {"platform": ("efi",)}),
    )
    d = decide(groups, facts(arch="x86_64", platform="efi"))
    assert d is not None and d.group and d.group.name == "b"
    assert "tied with a" in d.reason
    # the same answer every time, whatever the dict order of the facts
    assert decide(groups, facts(platform="efi", arch="x86_64")) == d


def test_operator_profile_beats_groups() -> None:
    d = decide(GROUPS, facts(platform="efi"), assigned_profile="debug")
    assert d is not None and d.profile == "debug" and d.group is None
    assert d.reason == "profile assigned by an operator"


def test_no_default_and_no_match_is_none() -> None:
    assert decide(GROUPS[1:2], facts(platform="pcbios")) is None


def test_list_values_mean_any_of() -> None:
    g = (Group("x", "coreos", {"arch": ("i386", "x86_64")}),)
    assert decide(g, facts(arch="x86_64")) is not None
    assert decide(g, facts(arch="arm64")) is None


def test_builtin_facts_beat_labels_of_the_same_name() -> None:
    f = facts(labels={"mac": "52:54:00:00:00:01"})
    d = decide(GROUPS, f)
    assert d is not None and d.group and d.group.name == "default"


def test_verdicts_explain_each_group() -> None:
    d = decide(GROUPS, facts(platform="efi", labels={"rack": "r2"}))
    assert d is not None
    why = {v.group: v for v in d.verdicts}
    assert not why["rack1-efi"].matched and "rack is 'r2', wants r1" in why["rack1-efi"].why
    assert why["efi"].matched
