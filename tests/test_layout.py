"""The package's layout: imports run one way (no module imports one that imports it back), and
reloading a trained model imports nothing of the training loop."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "altmodal"


def imports() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere (top level, in functions, for types)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("altmodal"):
                found = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found = {a.name for a in node.names}
            else:
                continue
            graph[name] |= {f for f in found if f in modules and f != name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of ``graph`` (empty if there is none)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_module_imports_one_that_imports_it_back():
    graph = imports()
    assert len(graph) > 60 and "altmodal.trainer" in graph["altmodal.experiment"]
    assert cycle(graph) == []
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check finds one


def test_strategies_and_the_model_never_import_the_loop():
    graph = imports()

    def reaches(start: str, target: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == target:
                return True
            if node not in seen:
                seen.add(node)
                todo += graph[node]
        return False

    strategies = [m for m in graph if m.startswith("altmodal.strategies")]
    reload = [*strategies, "altmodal.model", "altmodal.predictor", "altmodal.saved", "altmodal.bagging"]
    assert strategies and [m for m in reload if reaches(m, "altmodal.trainer")] == []
    assert reaches("altmodal.experiment", "altmodal.trainer")
