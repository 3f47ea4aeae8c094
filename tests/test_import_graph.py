"""The project's layers point one way: nothing below `launch/` imports it,
and no module imports itself back through others (no cycle), whether the
import sits at the top of a module or inside a function.

The graph is read from the source (ast), so it covers every import a module
can make, not only those one run happens to take."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("alexnet_tf", "data_prep", "experiments", "launch")
BELOW_LAUNCH = ("alexnet_tf", "data_prep", "experiments")


def project_modules() -> dict[str, str]:
    """Dotted module name -> file, for every .py under the packages."""
    modules = {}
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(REPO, package)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    modules[".".join(parts)] = path
    return modules


def imported_names(path: str, module: str, is_package: bool) -> set[str]:
    """Every dotted name an import statement in the file names: `import a.b`
    gives a.b; `from a import b` gives a.b (a module, or a name defined in
    a: `import_graph` then cuts it back to a); relative imports resolved."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                if not is_package:
                    package = package[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (an import of a name inside a
    module counts as an arrow to that module)."""
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        is_package = path.endswith("__init__.py")
        targets = set()
        for name in imported_names(path, module, is_package):
            # `a.b.c` where c is a function of module a.b: the arrow goes to a.b.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _in(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_graph_sees_the_projects_imports():
    """The reader itself: known arrows are there, so an empty answer below
    means no arrow, not a blind reader."""
    graph = import_graph()
    assert len(graph) > 80
    assert "alexnet_tf.cli.config_flags" in graph["launch.train"]
    assert "alexnet_tf.cli.terminal" in graph["data_prep.build_tfrecords"]
    assert "data_prep.writer" in graph["data_prep.forkserver_preload"]
    assert "alexnet_tf.training.loop" in graph["launch.train"]  # imported inside main()
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_below_launch_imports_launch():
    graph = import_graph()
    upward = sorted(f"{module} -> {target}" for module, targets in graph.items()
                    if _in(module, BELOW_LAUNCH) for target in targets
                    if _in(target, ("launch",)))
    assert upward == []


def test_the_library_does_not_import_the_tools_or_experiments():
    graph = import_graph()
    upward = sorted(f"{module} -> {target}" for module, targets in graph.items()
                    if _in(module, ("alexnet_tf",)) for target in targets
                    if _in(target, ("data_prep", "experiments", "launch")))
    assert upward == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []
