"""Imports flow one way: launch -> framework / data_pipeline -> shared foundations, with no cycles.

Every `import` statement counts, including the ones inside functions (a lazy import is still a
dependency). The rules, each a wrong-way edge that fails the test:
- framework never imports data_pipeline (curation may use the framework: the perplexity step does);
- framework and data_pipeline never import launch (the CLI sits on top);
- data_pipeline.io never imports data_pipeline.steps (readers are below the steps);
- framework.model never imports framework.parallel (the model knows nothing of parallelism);
and no two modules of the project import each other, directly or around a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("framework", "data_pipeline", "launch")
RULES = [
    ("framework", "data_pipeline"),
    ("framework", "launch"),
    ("data_pipeline", "launch"),
    ("data_pipeline.io", "data_pipeline.steps"),
    ("framework.model", "framework.parallel"),
]


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(path: Path, module: str) -> set[str]:
    """Dotted names this file imports (for `from X import Y`, both X and X.Y: Y may be a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports (names resolved to the longest existing module)."""
    files = {_module(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}

    def resolve(name: str) -> str:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for module, path in files.items():
        hits = {resolve(t) for t in _targets(path, module) if t.split(".")[0] in packages}
        graph[module] = {h for h in hits if h and h != module}
    return graph


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def wrong_way_edges(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{src} -> {dst}"
        for src, dsts in graph.items()
        for dst in dsts
        for low, high in RULES
        if _under(src, low) and _under(dst, high)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_imports_flow_one_way_without_cycles():
    graph = import_graph(ROOT)
    assert len(graph) > 100 and "framework.training.trainer" in graph
    assert wrong_way_edges(graph) == []
    assert cycles(graph) == []


def test_a_planted_wrong_way_import_and_cycle_are_caught(tmp_path):
    for rel, text in {
        "framework/__init__.py": "",
        "framework/model/__init__.py": "",
        "framework/model/net.py": "def f():\n    from framework.parallel.tp import shard  # lazy, still an edge\n",
        "framework/parallel/__init__.py": "",
        "framework/parallel/tp.py": "from ..model import net\nshard = 1\n",
        "framework/train.py": "import data_pipeline.steps.base\n",
        "data_pipeline/__init__.py": "",
        "data_pipeline/steps/__init__.py": "",
        "data_pipeline/steps/base.py": "",
        "data_pipeline/io/__init__.py": "",
        "data_pipeline/io/read.py": "from data_pipeline.steps import base\n",
        "launch/__init__.py": "",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = import_graph(tmp_path)
    assert wrong_way_edges(graph) == [
        "data_pipeline.io.read -> data_pipeline.steps",  # the package's __init__
        "data_pipeline.io.read -> data_pipeline.steps.base",
        "framework.model.net -> framework.parallel.tp",
        "framework.train -> data_pipeline.steps.base",
    ]
    assert cycles(graph) == [["framework.model.net", "framework.parallel.tp"]]
