"""The package's import graph, read from the source (ast): one way, no cycles.

Layers, lowest first (STYLE.md habit 3 on the package's layout). A module may import
from its own unit (a top-level module, or a subpackage) and from units of lower layers;
two units of the same layer do not import each other. Every import counts, also those
inside functions and under ``TYPE_CHECKING``: a cycle hidden in a function is a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pxeserver"

LAYERS: list[set[str]] = [
    {"__init__", "errors", "metrics", "logs", "ratelimit", "hints", "jsontext"},  # leaves
    {"model"},  # domain types
    {"timeline", "profiles", "fetchsecret"},  # rules over the domain types
    {"config"},  # settings
    {"store", "render", "host"},  # the store, templates, the host's network and users
    {"nodes"},  # the registry and what keeps it going
    {"boot", "checks"},  # the boot policy every protocol asks; what can be checked before
    {"dhcp", "tftp", "web"},  # the protocols
    {"udp"},  # TFTP and ProxyDHCP, bound and run together in the main process
    {"daemon"},  # wiring
    {"commands"},  # what the CLI's commands do
    {"cli"},
    {"__main__"},
]
# The protocols reach the registry and the store only through the boot policy.
PROTOCOLS = {"dhcp", "tftp", "web"}
BEHIND_THE_POLICY = {"nodes", "store"}


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root``, by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(root: Path) -> dict[str, set[str]]:
    """For each module of the package, the modules of the same package it imports."""
    known = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                for alias in node.names:
                    # `from . import x`: the submodule x if there is one, else the package
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        graph[name] = {_owner(t, known) for t in targets} - {None, name}  # type: ignore[misc]
    return graph


def _owner(target: str, known: dict[str, Path]) -> str | None:
    """The package's module that ``target`` names (the longest known prefix), if any."""
    parts = target.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return None


def unit(module: str) -> str:
    """The part of the package a module belongs to: its top-level module or subpackage."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles (strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def wrong_way(graph: dict[str, set[str]], layers: list[set[str]]) -> list[str]:
    """Imports that go up or sideways between layers, or from a protocol to what is
    behind the policy; and modules in no declared layer."""
    rank = {u: i for i, layer in enumerate(layers) for u in layer}
    problems = []
    for src, targets in sorted(graph.items()):
        if unit(src) not in rank:
            problems.append(f"{src}: in no layer of tests/test_layers.py; declare where it sits")
            continue
        for dst in sorted(targets):
            a, b = unit(src), unit(dst)
            if a == b or b not in rank:
                continue
            if rank[b] >= rank[a]:
                way = "up" if rank[b] > rank[a] else "sideways"
                problems.append(f"{src} imports {dst}: {way}, from layer {a} to layer {b}")
            if a in PROTOCOLS and b in BEHIND_THE_POLICY:
                problems.append(f"{src} imports {dst}: protocols go through the boot policy")
    return problems


def test_the_package_imports_one_way_without_cycles() -> None:
    graph = imports(PACKAGE)
    assert len(graph) > 40  # the walk found the package
    problems = [f"import cycle: {', '.join(c)}" for c in cycles(graph)]
    problems += wrong_way(graph, LAYERS)
    assert not problems, "\n".join(problems)


def test_web_reaches_neither_registry_nor_store() -> None:
    graph = imports(PACKAGE)
    web = {m: t for m, t in graph.items() if unit(m) == "web"}
    assert web, "no web modules found"
    behind = sorted(f"{m} imports {t}" for m, ts in web.items() for t in ts
                    if unit(t) in BEHIND_THE_POLICY)  # fmt: skip
    assert not behind, "\n".join(behind)
    # positive control: the boot policy itself does import the registry
    assert any(unit(t) == "nodes" for t in graph["pxeserver.boot.service"])


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pxeserver"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checks_catch_cycles_upward_imports_and_web_reaching_behind(
    tmp_path: Path,
) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "model.py": "from .boot import x\n",  # up
            "boot.py": "def f():\n    from . import model\n",  # a cycle, hidden in a function
            "nodes/__init__.py": "",
            "nodes/registry.py": "from ..model import MAC\n",  # fine: down
            "web/__init__.py": "from . import api\n",
            "web/api.py": "from ..nodes.registry import UNSET\nfrom . import helper\n",
            "web/helper.py": "import pxeserver.web\n",  # back to the package: a cycle
            "extra.py": "",
        },
    )
    graph = imports(root)
    assert graph["pxeserver.web"] == {"pxeserver.web.api"}
    assert cycles(graph) == [
        ["pxeserver.boot", "pxeserver.model"],
        ["pxeserver.web", "pxeserver.web.api", "pxeserver.web.helper"],
    ]
    assert wrong_way(graph, LAYERS) == [
        "pxeserver.extra: in no layer of tests/test_layers.py; declare where it sits",
        "pxeserver.model imports pxeserver.boot: up, from layer model to layer boot",
        "pxeserver.web.api imports pxeserver.nodes.registry: protocols go through the boot policy",
    ]
