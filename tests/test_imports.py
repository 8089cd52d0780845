"""The package's import graph, read from the source with ``ast``: acyclic, and data flows one way."""
import ast
import os

import pytest

PACKAGE_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "yolact_d2")
# Subpackages that nothing in modeling/ may import: modeling is what they build on.
NOT_FROM_MODELING = ("yolact_d2.export", "yolact_d2.benchmark", "yolact_d2.data", "yolact_d2.engine", "tools")


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(PACKAGE_ROOT))[: -len(".py")].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def _imports(path: str, module: str):
    """The modules that ``module`` (the file ``path``) imports, absolute."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # "from . import data"
    return found


def _graph():
    files = {}
    for folder, _, names in os.walk(PACKAGE_ROOT):
        paths = [os.path.join(folder, n) for n in names if n.endswith(".py")]
        files.update({_module_name(p): p for p in paths})
    return {m: {t for t in _imports(p, m) if t in files and t != m} for m, p in files.items()}


def test_the_import_parser_on_a_hand_worked_example(tmp_path):
    path = tmp_path / "loss.py"
    path.write_text("import torch\nfrom .masks import a\nfrom ..layers import b\nfrom . import head\n")
    assert _imports(str(path), "yolact_d2.modeling.loss") >= {
        "torch", "yolact_d2.modeling.masks", "yolact_d2.layers", "yolact_d2.modeling.head"
    }


def test_nothing_in_modeling_imports_tools_data_export_benchmark_or_engine():
    graph = _graph()
    modeling = [m for m in graph if m.startswith("yolact_d2.modeling")]
    assert len(modeling) >= 10
    bad = {m: sorted(t for t in graph[m] if t.startswith(NOT_FROM_MODELING)) for m in modeling}
    assert not {m: t for m, t in bad.items() if t}


def test_the_import_graph_is_acyclic():
    graph = _graph()
    # A submodule naming its own package (``from . import x``) reaches the package's other modules, kept as edges.
    edges = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    state = {}

    def visit(module, path):
        if state.get(module) == "done":
            return
        if state.get(module) == "open":
            pytest.fail("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
        state[module] = "open"
        for target in sorted(edges[module]):
            visit(target, path + [module])
        state[module] = "done"

    for module in sorted(edges):
        visit(module, [])
