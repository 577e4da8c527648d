"""The package's modules import each other without cycles (issue 17.2): at module
level, ``TYPE_CHECKING`` blocks and imports inside functions aside."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ACP = Path(__file__).resolve().parents[1] / "acp"


def module_imports() -> dict[str, set[str]]:
    mods = {}
    for path in ACP.rglob("*.py"):
        name = ".".join(path.relative_to(ACP.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("acp"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    graph[name].add(full if full in mods else str(node.module))
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name.startswith("acp.")}
    return {m: {t for t in targets if t in mods and t != m} for m, targets in graph.items()}


def test_no_import_cycle_in_the_package() -> None:
    graph = module_imports()
    assert len(graph) > 60
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
