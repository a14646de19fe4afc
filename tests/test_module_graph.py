"""Jobwatch's modules import each other in one direction: no cycle among the imports that run when
a module is loaded. (An import inside a function runs later, when it is called; those are not
edges here.) A cycle makes the load order matter, and usually means a concept has two homes.

An import inside a function hides an edge from this test, so each one says why it is there (an
optional library, models not ready when the module loads) in a comment beside or just above it."""

import ast
import importlib
import pkgutil
from pathlib import Path

import monitors

ROOT = Path(monitors.__file__).parent


def module_names():
    return sorted(info.name for info in pkgutil.walk_packages([str(ROOT)], prefix="monitors.")
                  if ".migrations." not in info.name)


def path_of(name):
    base = ROOT.parent / name.replace(".", "/")
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def load_time_imports(name, known):
    """The monitors modules `name` imports at module level (not inside functions or classes' methods)."""
    tree = ast.parse(path_of(name).read_text())
    found = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("monitors."))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
                    node.module == "monitors" or node.module.startswith("monitors.")):
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    found.add(submodule if submodule in known else node.module)
                    # Importing monitors.a.b runs monitors/a/__init__.py first: an edge too,
                    # unless the importer is inside that package (which is loading already).
                    package = node.module.rpartition(".")[0] if submodule not in known else node.module
                    while package.count(".") >= 1 and not name.startswith(package + "."):
                        found.add(package)
                        package = package.rpartition(".")[0]
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, block, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])

    visit(tree.body)
    found.discard(name)
    return {module for module in found if module in known}


def test_no_import_cycle_among_jobwatchs_modules():
    names = set(module_names())
    graph = {name: load_time_imports(name, names) for name in names}
    cycles, state = [], {}

    def walk(node, trail):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                walk(target, trail + [target])
        state[node] = "done"

    for name in sorted(names):
        if name not in state:
            walk(name, [name])
    assert cycles == [], "\n".join(" → ".join(cycle) for cycle in cycles)


def test_every_module_imports():
    for name in module_names():
        importlib.import_module(name)


def function_level_imports(name):
    source = path_of(name).read_text()
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    yield inner.lineno, lines[max(inner.lineno - 4, 0) : inner.lineno]


def test_every_import_inside_a_function_says_why():
    unexplained = [f"{path_of(name).relative_to(ROOT.parent)}:{line}: {context[-1].strip()}"
                   for name in module_names() for line, context in function_level_imports(name)
                   if not any("#" in text for text in context)]
    assert unexplained == [], "imports inside functions without a reason:\n" + "\n".join(sorted(set(unexplained)))
