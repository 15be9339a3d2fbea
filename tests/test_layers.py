"""The layer rule, read from the source: datasets → pp → tl → pl, and ``models`` below ``tl``.

Every module under ``src/stmorph`` is parsed with :mod:`ast` (imports inside functions and
``TYPE_CHECKING`` blocks count: a lazy import is still a dependency) and its package-internal
imports are collapsed to folders: ``datasets``, ``pp``, ``tl``, ``pl``, ``models``, and one node per
top-level module (``_validation``, ``cli``, ...; ``stmorph`` is the package ``__init__``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import stmorph

PACKAGE = Path(stmorph.__file__).parent
FOLDERS = ("datasets", "pp", "tl", "pl", "models")
FORBIDDEN = {
    "models": ("tl", "pp", "pl"),
    "pp": ("tl", "pl"),
    "datasets": ("pp", "tl", "pl", "models"),
    "tl": ("pl",),
}


def _module_name(path: Path) -> str:
    """Dotted name of the module at ``path`` (``stmorph.tl._eps``; a package is its ``__init__``)."""
    parts = ["stmorph", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """Every ``stmorph`` module of ``modules`` that ``module`` imports, absolute and relative."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names = {f"{base}.{alias.name}" for alias in node.names}  # ``from . import pp``: a module
            found.update(names & modules or {base})
    return found & modules


def _node(module: str) -> str:
    """The folder (``tl``) or top-level module (``_validation``) a dotted module name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "stmorph"


def import_graph() -> dict[tuple[str, str], list[str]]:
    """Folder-level arrows ``(from, to)`` with, for each, the modules whose imports make it."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    arrows: dict[tuple[str, str], list[str]] = {}
    for path in paths:
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target in _imported(tree, module, path.name == "__init__.py", modules):
            edge = (_node(module), _node(target))
            if edge[0] != edge[1]:
                arrows.setdefault(edge, []).append(f"{module} imports {target}")
    return arrows


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_the_known_arrows(graph):
    # the parser resolves absolute, relative, ``from . import x`` and function-level imports
    assert ("tl", "models") in graph  # st.tl.predict uses the method registry
    assert ("pp", "_image") in graph and ("datasets", "_image") in graph  # both read images through _image
    assert ("_demo", "tl") in graph and ("_demo", "pl") in graph  # ``from . import pl, tl``
    assert ("_report", "stmorph") in graph and ("_report", "__version__") not in graph  # a name, not a module
    assert ("tl", "_validation") in graph
    assert {node for edge in graph for node in edge} >= set(FOLDERS)


@pytest.mark.parametrize("source", sorted(FORBIDDEN))
def test_no_arrow_against_the_layer_rule(graph, source):
    wrong = {
        f"{source} -> {target}": graph[(source, target)] for target in FORBIDDEN[source] if (source, target) in graph
    }
    assert not wrong, f"imports against the layer rule: {wrong}"


def test_the_folders_and_top_level_modules_form_no_cycle(graph):
    # the package ``__init__`` ("stmorph") gathers the public API, so arrows to it (``__version__``) are left out
    edges = {(a, b) for a, b in graph if "stmorph" not in (a, b)}
    left = {node for edge in edges for node in edge}
    # Kahn's algorithm: nodes in a cycle never lose all their incoming arrows
    while free := {f for f in left if not any(a in left and b == f for a, b in edges)}:
        left -= free
    assert not left, f"folders/modules in an import cycle: {sorted(left)}; arrows among them: " + str(
        {edge: graph[edge] for edge in edges if set(edge) <= left}
    )


def test_the_method_registry_in_models_loads_no_heavy_library():
    # models/__init__ is imported with stmorph; the registry must leave torch and lightgbm to first use
    code = (
        "import sys, stmorph as st\n"
        "assert st.tl.list_methods() and st.models.Predictor and st.models.register_method is st.tl.register_method\n"
        "print(sorted(m for m in ('torch', 'lightgbm', 'sklearn') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
