"""The house's plan, checked: the packages' import graph has no cycle, and the engine
(everything in lts/ outside lts/cli/ and the ``python -m`` entry packages) never imports a
command line."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

# ``python -m lts.NAME`` entry packages: each runs lts.cli.NAME
ENTRY = ("lts.optimize", "lts.compare", "lts.evaluate", "lts.inspect", "lts.render", "lts.refine", "lts.bench",
         "lts.bench_ray")  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ("lts", "policies", "simulators"):
        for path in (REPO / pkg).rglob("*.py"):
            out[".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """The lts / policies / simulators modules ``name`` imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in ("lts", "policies", "simulators")}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {m: {i for i in _imports(m, p) if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ re-exporting its own modules is not a circle between modules
    return {m: {i for i in deps if not i.startswith(m + ".")} for m, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """A circle of imports in ``graph`` (module → the modules it imports), or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycle: list[str] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1 and not cycle:
                cycle.extend([*path[path.index(d) :], d])
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycle


def test_the_packages_import_graph_has_no_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]  # it can fail
    assert find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) == []
    cycle = find_cycle(_graph())
    assert not cycle, " → ".join(cycle)


def _is_cli(module: str) -> bool:
    return any(module == e or module.startswith(e + ".") for e in ("lts.cli", *ENTRY))


def test_the_engine_imports_no_command_line():
    graph = _graph()
    engine = [m for m in graph if m.startswith("lts") and not _is_cli(m)]
    assert {"lts.api", "lts.loop", "lts.phases", "lts.comparison", "lts.final_evaluation"} <= set(engine)
    bad = {m: sorted(d for d in graph[m] if _is_cli(d)) for m in engine}
    assert not {m: d for m, d in bad.items() if d}
