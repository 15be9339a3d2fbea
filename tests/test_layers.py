"""The layer rule, read from the source: datasets → pp → tl → pl, and ``models`` below ``tl``.

Every module under ``src/stmorph`` is parsed with :mod:`ast` (imports inside functions and
``TYPE_CHECKING`` blocks count: a lazy import is still a dependency). For the layer rule its
package-internal imports are collapsed to folders: ``datasets``, ``pp``, ``tl``, ``pl``, ``models``,
and one node per top-level module (``_validation``, ``cli``, ...; ``stmorph`` is the package
``__init__``). The module graph itself (same-folder arrows included) must have no cycle, and a
private module or name stays inside its package: ``stmorph.pp._lazy`` is imported only from
``stmorph.pp`` (other packages go through ``pp/__init__``), while the top-level private modules
(``stmorph._validation``, ...) are shared by every package; an underscore name (``_available``) is
imported only by modules of its own package.
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


def _import_froms(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """Every import of ``module`` as ``(dotted module, imported names)``; ``import a.b`` is ``("a.b", [])``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.append((base, [alias.name for alias in node.names]))
    return found


def _imported(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """Every ``stmorph`` module of ``modules`` that ``module`` imports, absolute and relative."""
    found = set()
    for base, names in _import_froms(tree, module, is_package):
        submodules = {f"{base}.{name}" for name in names}  # ``from . import pp``: a module
        found.update(submodules & modules or {base})
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


def _parsed() -> dict[str, tuple[Path, ast.AST]]:
    """Every module of the package by dotted name, with its path and syntax tree."""
    trees = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        trees[_module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return trees


def module_graph() -> dict[str, set[str]]:
    """Module-level arrows: for each ``stmorph`` module, the ``stmorph`` modules it imports (same folder included).

    Importing ``stmorph.tl._eps`` also runs ``stmorph/tl/__init__.py``; that implicit parent import is
    not an arrow (every package ``__init__`` imports its own modules).
    """
    trees = _parsed()
    modules = set(trees)
    return {
        module: _imported(tree, module, path.name == "__init__.py", modules) - {module}
        for module, (path, tree) in trees.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _package(module: str, packages: set[str]) -> str:
    """The package a module belongs to: itself for a package ``__init__``, else its parent."""
    return module if module in packages else module.rsplit(".", 1)[0]


def _private(module: str) -> bool:
    """Whether a part of the dotted name below ``stmorph`` starts with one underscore (``__init__`` does not count)."""
    return any(part.startswith("_") and not part.startswith("__") for part in module.split(".")[1:])


def private_crossings() -> list[str]:
    """Imports of a private module, or of an underscore name, from outside the package that owns it."""
    trees = _parsed()
    modules = set(trees)
    packages = {module for module, (path, _) in trees.items() if path.name == "__init__.py"}
    wrong = []
    for module, (path, tree) in trees.items():
        for target in _imported(tree, module, path.name == "__init__.py", modules):
            owner = _package(target, packages)
            inside = module == owner or module.startswith(f"{owner}.")
            if _private(target.removeprefix(owner)) and not inside:
                wrong.append(f"{module} imports the private module {target}")
        for base, names in _import_froms(tree, module, path.name == "__init__.py"):
            private = [
                n for n in names if n.startswith("_") and not n.startswith("__") and f"{base}.{n}" not in modules
            ]
            if base in modules and private and _package(base, packages) != _package(module, packages):
                wrong.append(f"{module} imports the private name(s) {private} of {base}")
    return wrong


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


def test_the_module_graph_sees_same_folder_and_function_level_arrows():
    modules = module_graph()
    assert "stmorph.tl._graph" in modules["stmorph.tl._eps"]  # same folder, module level
    assert "stmorph.pp" in modules["stmorph.tl._cohort"]  # ``from ..pp import extract_patches`` inside a function
    assert "stmorph.pl._utils" in modules["stmorph.pl._cv"]  # ``from . import _utils``
    assert "stmorph.tl._eps" in modules["stmorph.tl"]  # a package __init__ imports its modules


def test_no_module_is_part_of_an_import_cycle():
    modules = module_graph()
    found = cycles(modules)
    assert not found, "modules in an import cycle: " + "; ".join(
        ", ".join(f"{a} -> {b}" for a in cycle for b in sorted(modules[a]) if b in cycle) for cycle in found
    )


def test_the_cycle_finder_finds_a_cycle_through_a_package_init():
    toy = {"p": {"p._a"}, "p._a": {"p._b"}, "p._b": {"p._a", "q"}, "q": set(), "r": {"q"}}
    assert cycles(toy) == [["p._a", "p._b"]]
    assert cycles({**toy, "p._b": {"q"}}) == []


def test_private_modules_and_names_stay_inside_their_package():
    assert not (wrong := private_crossings()), "\n".join(wrong)


def test_the_privacy_rule_refuses_a_crossing_and_allows_the_shared_top_level_modules(monkeypatch):
    source = (
        "from ..pp._lazy import lazy_patch_params\n"  # another package's private module: refused
        "from .._validation import _available, check_int\n"  # a top-level module: fine; its underscore name: refused
        "from ._graph import build_graph\n"  # the same package: fine
    )
    real = _parsed()
    fake = {**real, "stmorph.tl._fake": (PACKAGE / "tl" / "_fake.py", ast.parse(source))}
    monkeypatch.setattr(sys.modules[__name__], "_parsed", lambda: fake)
    assert sorted(w for w in private_crossings() if w.startswith("stmorph.tl._fake")) == [
        "stmorph.tl._fake imports the private module stmorph.pp._lazy",
        "stmorph.tl._fake imports the private name(s) ['_available'] of stmorph._validation",
    ]
