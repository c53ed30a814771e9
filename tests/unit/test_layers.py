"""The import contract: layers read from the folder names, arrows one way, no cycles.

    schemas <- generators <- signalgen (foundation: settings, logs, config, storage, bus,
    marketdata, ingress, ops, runtime) <- dispatcher <- tasks, celeryconfig
    <- signalgen.interfaces (http, cli, dev runner, probes, screenshots)

Built from the source with `ast` (nothing is imported): every `import` counts, at module level
or inside a function, except those under `if TYPE_CHECKING:`. tests/ and bench/ may import any
layer; no code outside tests/ imports tests. docs/architecture.md draws the same picture.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "generators", "signalgen", "dispatcher", "tasks", "bench", "tests")
MODULES = ("celeryconfig",)
#: Lowest first. A module may import its own layer and the layers before it.
LAYERS = ("schemas", "generators", "foundation", "dispatcher", "tasks", "interfaces")
#: Cross-cutting: any layer may use it (structured log events); it imports no project module.
CROSS_CUTTING = ("signalgen.logs",)


def layer_of(module: str) -> str | None:
    """The layer of `module` by its folder; None for tests/ and bench/ (free to import)."""
    top = module.split(".")[0]
    if top in ("tests", "bench"):
        return None
    if module == "signalgen.interfaces" or module.startswith("signalgen.interfaces."):
        return "interfaces"
    if top == "signalgen":
        return "foundation"
    if top == "celeryconfig":
        return "tasks"  # the Celery app's settings: `celery -A tasks` loads it
    return top


def unit_of(module: str) -> str:
    """The package a module belongs to, for the package-cycle check: a top-level package, or a
    folder (or module) directly under `signalgen/` and `signalgen/interfaces/`."""
    parts = module.split(".")
    if parts[0] != "signalgen":
        return parts[0]
    if len(parts) > 2 and parts[1] == "interfaces":
        return ".".join(parts[:3])
    return ".".join(parts[:2])


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    path: Path
    line: int
    #: A package `__init__` that runs first because `target` is inside it (not written).
    implicit: bool = False

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.target}"


def project_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name in MODULES:
        if (ROOT / f"{name}.py").exists():
            found[name] = ROOT / f"{name}.py"
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the `if TYPE_CHECKING:` body is for the type checker
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports(modules: dict[str, Path]) -> list[Import]:
    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    out: list[Import] = []
    for source, path in modules.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    names.append(full if full in modules else base)
            for name in names:
                target = resolve(name)
                if target is None or target == source:
                    continue
                out.append(Import(source, target, path, node.lineno))
                # Importing a.b.c runs a/__init__ and a/b/__init__ first: from outside, those
                # run too (a module never re-enters the packages it is inside).
                parts = target.split(".")
                for n in range(1, len(parts)):
                    ancestor = ".".join(parts[:n])
                    inside = source == ancestor or source.startswith(ancestor + ".")
                    if ancestor in modules and not inside:
                        out.append(Import(source, ancestor, path, node.lineno, implicit=True))
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


MODULE_MAP = project_modules()
IMPORTS = imports(MODULE_MAP)
CODE = [i for i in IMPORTS if layer_of(i.source) is not None]


def test_every_layer_has_a_folder() -> None:
    layers = {layer_of(m) for m in MODULE_MAP}
    assert set(LAYERS) <= layers, f"no module in layer(s) {set(LAYERS) - layers}"


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    upward = []
    for imp in CODE:
        source, target = layer_of(imp.source), layer_of(imp.target)
        if target is None or imp.implicit or imp.target in CROSS_CUTTING:
            continue  # tests: below; a package's __init__: its module is checked
        assert source is not None
        if LAYERS.index(target) > LAYERS.index(source):
            upward.append(f"{imp} ({source} -> {target})")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_only_tests_import_tests() -> None:
    offenders = [
        str(imp)
        for imp in IMPORTS
        if imp.target.split(".")[0] == "tests" and imp.source.split(".")[0] != "tests"
    ]
    assert not offenders, "code outside tests/ importing tests:\n" + "\n".join(offenders)


def _explain(members: list[str], edges: list[Import], key: Callable[[str], str]) -> str:
    inside = set(members)
    lines = [
        f"  {imp}"
        for imp in edges
        if key(imp.source) in inside
        and key(imp.target) in inside
        and key(imp.source) != key(imp.target)
    ]
    return " <-> ".join(members) + "\n" + "\n".join(sorted(set(lines)))


def folder_of(module: str) -> str:
    path = MODULE_MAP[module]
    return str(path.parent.relative_to(ROOT))


def test_cross_cutting_modules_import_no_project_module() -> None:
    offenders = [str(imp) for imp in CODE if imp.source in CROSS_CUTTING]
    assert not offenders, "\n".join(offenders)


def test_no_cycle_between_modules_of_different_folders() -> None:
    # Inside one folder, a package's __init__ and its modules may import each other (the Celery
    # app and its task modules); across folders, never.
    graph: dict[str, set[str]] = {}
    for imp in CODE:
        graph.setdefault(imp.source, set()).add(imp.target)
    found = [c for c in cycles(graph) if len({folder_of(m) for m in c}) > 1]
    assert not found, "import cycles across folders:\n" + "\n".join(
        _explain(c, CODE, lambda m: m) for c in found
    )


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for imp in CODE:
        source, target = unit_of(imp.source), unit_of(imp.target)
        if source != target:
            graph.setdefault(source, set()).add(target)
    found = cycles(graph)
    assert not found, "package cycles:\n" + "\n".join(_explain(c, CODE, unit_of) for c in found)


def test_the_checker_sees_what_it_must() -> None:
    # The graph is real: known arrows are there, at function level as well as module level.
    pairs = {(i.source, i.target) for i in IMPORTS}
    assert ("tasks", "signalgen.bus.kombu_compat") in pairs
    assert ("signalgen.interfaces.cli.http", "signalgen.interfaces.http.app") in pairs
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("signalgen.interfaces.http.api") == "interfaces"
    assert layer_of("signalgen.bus.topology") == "foundation"
