"""The trainer's import graph, read with ``ast``: no circle, and no room imports a room above it."""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

# The rooms from the bottom up: a module may import its own room and those below it.
RANKS = {
    "experiments": 0,  # the package: its __init__ imports no project module
    "experiments.run": 0,
    "experiments.step": 1,
    "experiments.models": 1,
    "experiments.optimizers": 1,
    "experiments.metrics": 1,
    "experiments.plots": 1,
    "experiments.data": 1,
    "experiments.methods": 2,
    "experiments.config": 3,
    "experiments.configs": 3,
    "experiments.train": 4,
    "experiments.main": 5,
    "studies": 6,
}
# Forwarding modules of earlier releases (python -m experiments.sweep, ...): they point up
# to studies/ on purpose, and only they do.
FORWARDING = {"experiments.fashion_mnist_study", "experiments.sweep", "experiments.summarize_runs"}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    files = [*(REPO / "experiments").rglob("*.py"), *(REPO / "studies").rglob("*.py")]
    return {_module_name(path): path for path in files}


def _is_main_block(node) -> bool:
    """``if __name__ == "__main__":`` -- a module run as a script, not imported."""
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
    )


def _imports(path: pathlib.Path, name: str, modules) -> set[str]:
    """The project modules ``path`` imports, at any depth, outside ``__main__`` blocks."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node):
        if _is_main_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name}


def _graph():
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _rank(name: str) -> int:
    room = max((r for r in RANKS if name == r or name.startswith(r + ".")), key=len)
    return RANKS[room]


def test_the_import_graph_has_no_circle():
    graph = _graph()
    state: dict[str, str] = {}

    def walk(node, path):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycle = path[path.index(target) :] + [target]
                pytest.fail(f"import circle: {' -> '.join(cycle)}")
            if target not in state:
                walk(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])


def test_no_room_imports_a_room_above_it():
    upward = [
        f"{source} -> {target}"
        for source, targets in _graph().items()
        for target in targets
        if source != "experiments" and _rank(target) > _rank(source)
        if source not in FORWARDING
    ]
    assert upward == []


def test_the_run_infrastructure_imports_nothing_of_the_trainer():
    graph = _graph()
    run = {name for name in graph if name.startswith("experiments.run")}
    assert run >= {"experiments.run.lock", "experiments.run.workdir", "experiments.run.console"}
    for name in run:
        assert graph[name] <= run, (name, graph[name] - run)
    # The lock is read before JAX is imported: standard library only.
    lock = (REPO / "experiments" / "run" / "lock.py").read_text()
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(lock))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert imported <= {
        "__future__",
        "contextlib",
        "fcntl",
        "os",
        "pathlib",
        "sys",
        "time",
        "experiments",
    }


def test_the_loop_and_the_step_name_no_method():
    for name in ("train.py", "step.py"):
        text = (REPO / "experiments" / name).read_text().lower()
        assert "meta" not in text and "theta" not in text, name


def test_the_library_imports_nothing_of_the_trainer():
    for path in (REPO / "lpjax").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("experiments", "studies")), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith(("experiments", "studies")) for a in node.names)
