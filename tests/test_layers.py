"""The package's floors, read from its own imports: a module imports only from its floor or
lower ones, and no two modules or packages import each other. A newcomer can then change one
floor without reading those above it, and the sans-I/O parsers stay free of sinks and flags.

Every import counts, also the lazy ones inside functions: an import hidden in a function is
still a dependency, only a later one. Only names imported for type checkers (under
``if TYPE_CHECKING:``) are left out: they never run, and the ground floor's data types may name
the parsed objects they carry."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import iocwatch

PACKAGE = Path(iocwatch.__file__).resolve().parent

# Lowest first. A module belongs to the floor of its longest matching prefix.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("iocwatch", "iocwatch.boundary", "iocwatch.usage", "iocwatch.model"),
    ("iocwatch.protocols", "iocwatch.indicators"),
    ("iocwatch.decode", "iocwatch.capture", "iocwatch.flows"),
    ("iocwatch.engine", "iocwatch.matcher"),
    ("iocwatch.outputs", "iocwatch.store", "iocwatch.transport", "iocwatch.sqlitewal"),
    ("iocwatch.pipeline", "iocwatch.workers", "iocwatch.file_workers", "iocwatch.dns_learning",
     "iocwatch.privileges",
     "iocwatch.coverage",
     "iocwatch.hunt", "iocwatch.api", "iocwatch.tailgate"),
    ("iocwatch.commands", "iocwatch.cli", "iocwatch.__main__"),
)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:``."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's __init__ counts as the package)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                # `from pkg import mod` imports the submodule; `from pkg import name` the package.
                found = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                if not found or len(found) < len(node.names):
                    found.append(target)
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            for target in found:
                if target in mods and target != name:
                    edges[name].add(target)
    return edges


def floor(module: str) -> int:
    best, level = -1, -1
    for i, prefixes in enumerate(FLOORS):
        for p in prefixes:
            inside = module == p or (p != "iocwatch" and module.startswith(p + "."))
            if inside and len(p) > best:
                best, level = len(p), i
    return level


def test_every_module_has_a_floor() -> None:
    assert [m for m in modules() if floor(m) < 0] == []


def test_no_module_imports_a_higher_floor() -> None:
    mods = modules()
    upward = sorted(f"{m} (floor {floor(m)}) imports {t} (floor {floor(t)})"
                    for m, targets in imports(mods).items() for t in targets if floor(t) > floor(m))
    assert upward == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    nodes = set(edges) | {t for ts in edges.values() for t in ts}
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                    break
                if nxt in on:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.append(x)
                        if x == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _parent(module: str) -> str:
    """A package's own __init__ is part of the package: `iocwatch.store` imports its children."""
    return module.rpartition(".")[0]


def test_no_import_cycle_between_modules() -> None:
    edges = imports(modules())
    # A package's __init__ re-exporting its children is not a cycle with them.
    plain = {m: {t for t in ts if not m.startswith(t + ".") and not t.startswith(m + ".")}
             for m, ts in edges.items()}
    assert _cycles(plain) == []


def test_no_import_cycle_between_packages() -> None:
    mods = modules()
    packages: dict[str, set[str]] = defaultdict(set)
    for m, targets in imports(mods).items():
        src = m if mods[m].name == "__init__.py" else _parent(m)
        for t in targets:
            dst = t if mods[t].name == "__init__.py" else _parent(t)
            if src != dst and not src.startswith(dst + ".") and not dst.startswith(src + "."):
                packages[src].add(dst)
    assert _cycles(packages) == []


def test_argparse_only_in_the_command_layer() -> None:
    users = sorted(m for m, path in modules().items()
                   if floor(m) < len(FLOORS) - 1 and "argparse" in {
                       a.name for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                       if isinstance(n, ast.Import) for a in n.names} | {
                       n.module for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                       if isinstance(n, ast.ImportFrom) and n.module})
    assert users == []
