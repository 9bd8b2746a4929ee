"""The package's import graph: no cycles, and no module importing from a layer above its own.

The layers are those of ``../shared/DESIGN.md`` §2 (structures -> descriptors -> kernels ->
gp -> model -> calculator; model -> uq -> active; plot and cli on top), with the modules
the design leaves implicit placed where their imports put them: baselines beside the
descriptors (fixed physics terms on the structures), terms and io between gp and model.
Imports under ``if TYPE_CHECKING:`` are for annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gapkit

PACKAGE = Path(gapkit.__file__).parent

#: bottom (0) to top; a module may import only from its own layer or below
LAYERS = [
    ("gapkit._version", "gapkit._compat", "gapkit._checks", "gapkit._files",
     "gapkit._threads"),
    ("gapkit.data",),
    ("gapkit.neighbors",),
    ("gapkit.descriptors", "gapkit.baselines"),
    ("gapkit.kernels",),
    ("gapkit.gp",),
    ("gapkit.terms",),
    ("gapkit.io", "gapkit.export", "gapkit._metatomic_modules", "gapkit.auto"),
    ("gapkit.model",),
    ("gapkit.calculator", "gapkit.ntk", "gapkit.uq", "gapkit.generate", "gapkit.labelling"),
    ("gapkit.active", "gapkit.otf", "gapkit.testing"),
    ("gapkit.plot", "gapkit.cli", "gapkit.demo", "gapkit.__main__", "gapkit"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _layer(module: str) -> int:
    """The layer of ``module``: that of its longest listed prefix (``gapkit.gp.design`` is
    in ``gapkit.gp``'s layer)."""
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), i
    assert rank is not None, f"{module} is in no layer: add it to LAYERS"
    return rank


def _imports(modules: dict[str, Path]) -> set[tuple[str, str]]:
    """(importer, imported) for every import between gapkit modules, at any depth of the
    file (function-level imports count), TYPE_CHECKING blocks aside. ``from .x import y``
    names the module ``x.y`` when that is a module, else ``x``."""
    edges = set()
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges.update((name, t) for t in targets if t in modules and t != name)
    return edges


def _cycles(nodes, edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for n in nodes:
        if n not in index:
            visit(n)
    return out


def test_the_graph_is_read():
    """The parser sees the imports it is meant to judge (a test of the test)."""
    edges = _imports(_modules())
    assert ("gapkit.model", "gapkit.gp.posterior") in edges
    assert ("gapkit.uq.committee", "gapkit.model") in edges
    assert ("gapkit.testing", "gapkit.labelling") in edges
    assert not any(a == "gapkit.plot" for a, _ in edges)  # TYPE_CHECKING imports only


def test_every_module_has_a_layer():
    for name in _modules():
        _layer(name)


def test_no_import_cycles():
    modules = _modules()
    assert _cycles(sorted(modules), _imports(modules)) == []


def test_no_module_imports_from_a_layer_above():
    up = sorted((a, b) for a, b in _imports(_modules()) if _layer(b) > _layer(a))
    assert up == [], "upward imports: " + ", ".join(f"{a} -> {b}" for a, b in up)


def test_the_cycle_finder_finds_cycles():
    assert _cycles(["a", "b", "c"], {("a", "b"), ("b", "a"), ("b", "c")}) == [["a", "b"]]
    assert _cycles(["a", "b"], {("a", "b")}) == []
