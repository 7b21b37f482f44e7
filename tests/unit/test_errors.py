"""One error tree: every recforge exception is a RecforgeError, and its module is a leaf.

Also the package's import graph: which top-level parts may depend on which.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections import defaultdict
from pathlib import Path

import pytest

import recforge
from recforge.errors import Preempted, RecforgeError, user_facing_errors


def _recforge_modules() -> list:
    names = [
        m.name
        for m in pkgutil.walk_packages(recforge.__path__, "recforge.")
        if not m.name.endswith("__main__") and not m.name.endswith("_pb2")
    ]
    return [importlib.import_module(name) for name in names]


def test_errors_module_imports_nothing_from_recforge():
    tree = ast.parse(open(recforge.errors.__file__).read())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    assert not [name for name in imported if name and name.startswith("recforge")]


def test_every_recforge_exception_is_a_recforge_error():
    exceptions = {
        obj
        for module in _recforge_modules()
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Exception)
        and obj.__module__.startswith("recforge")
        and not obj.__name__.startswith("_")  # private control-flow signals, caught inside
    }
    assert len(exceptions) >= 10
    # Preempted is no mistake: training stopped on a signal after saving a checkpoint
    others = [e.__name__ for e in exceptions if not issubclass(e, (RecforgeError, Preempted))]
    assert others == []


def test_user_facing_errors_prints_one_line_and_exits_2(capsys):
    from recforge.utils.checkpoint import CheckpointError

    with pytest.raises(SystemExit) as stop, user_facing_errors():
        raise CheckpointError("model.ckpt-3/x.distcp: checksum mismatch")
    assert stop.value.code == 2
    assert capsys.readouterr().err == "recforge: error: model.ckpt-3/x.distcp: checksum mismatch\n"


def test_other_exceptions_keep_their_traceback():
    with pytest.raises(KeyError), user_facing_errors():
        raise KeyError("a bug")


# ---- the import graph -------------------------------------------------------------------------
def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``: an entry point the interpreter runs, never imported."""
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _imports(path: Path) -> set[str]:
    """Every recforge module ``path`` imports, at the top or inside a function (not under its
    ``if __name__ == "__main__":``, which like a ``__main__.py`` only runs as a program)."""
    tree = ast.parse(path.read_text())
    tree.body = [node for node in tree.body if not _is_main_guard(node)]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "recforge":  # from recforge import cli
                found.update(f"recforge.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return {name for name in found if name.startswith("recforge.")}


def _module_imports() -> dict[str, set[str]]:
    """``{module: the recforge modules it imports}`` (entry-point ``__main__`` files left out:
    the interpreter runs them, nothing imports them)."""
    root = Path(recforge.__file__).parent
    graph = {}
    for path in root.rglob("*.py"):
        if path.name == "__main__.py" or path.name.endswith("_pb2.py"):
            continue
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = _imports(path)
    return graph


def _top(module: str) -> str:
    """The top-level part a module belongs to: ``recforge.utils.layout`` -> ``utils``."""
    return module.split(".")[1]


def _top_level_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, imported in _module_imports().items():
        if module == "recforge":
            continue
        graph[_top(module)].update(_top(i) for i in imported if _top(i) != _top(module))
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_import_graph_is_read():
    graph = _top_level_graph()
    assert {"export", "models", "utils"} <= graph["cli"] | _reachable(graph, "cli")
    assert "recforge.utils.layout" in _module_imports()["recforge.export.files"]


@pytest.mark.parametrize(
    ("part", "must_not_reach"),
    [
        ("errors", "anything"),  # every module can raise the project's errors
        ("export", "cli"),  # the command sits on top of export, not beside it
        ("utils", "models"),  # shared plumbing below the models it builds
    ],
)
def test_layering_between_top_level_parts(part, must_not_reach):
    reached = _reachable(_top_level_graph(), part)
    if must_not_reach == "anything":
        assert reached == set()
    else:
        assert must_not_reach not in reached, f"{part} imports {must_not_reach} (maybe indirectly)"


@pytest.mark.parametrize(
    "part", ["errors", "export", "models", "cli", "predict", "tzrec_commands", "tools"]
)
def test_part_takes_no_part_in_an_import_cycle(part):
    graph = _top_level_graph()
    back = {other for other in _reachable(graph, part) if part in _reachable(graph, other)}
    assert back == set(), f"{part} and {sorted(back)} import each other (maybe indirectly)"


def test_an_entry_point_guard_is_not_an_import():
    graph = _module_imports()
    # python -m recforge.predict hands over to the command layer only when run as a program
    assert "recforge.tzrec_commands" not in graph["recforge.predict"]
    assert "recforge.predict" in graph["recforge.tzrec_commands"]  # the real edge is still read


def test_the_layout_module_imports_only_the_errors():
    assert _module_imports()["recforge.utils.layout"] == {"recforge.errors"}
