"""One error tree: every recforge exception is a RecforgeError, and its module is a leaf."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil

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
