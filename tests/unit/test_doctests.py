"""The ``>>>`` examples in recforge's docstrings run and print what they show.

One test per module that has examples; a module that needs an optional extra which is not
installed (``serve``: fastapi, uvicorn) is skipped. Generated ``*_pb2.py`` are not looked at.
"""

import doctest
import importlib
import io
from pathlib import Path

import pytest

import recforge
from tests.helpers.paths import REPO_ROOT

PACKAGE_DIR = Path(recforge.__file__).parent


def modules_with_examples() -> list[str]:
    """Dotted names of recforge's modules whose source has a ``>>>`` line."""
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path.name.endswith("_pb2.py") or ">>>" not in path.read_text(encoding="utf-8"):
            continue
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_or_skip(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] != "recforge":
            pytest.skip(f"{name} needs {error.name}, which is not installed (an optional extra)")
        raise


def test_the_examples_are_found():
    assert "recforge.features.hashing" in modules_with_examples()


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples(name, monkeypatch):
    module = import_or_skip(name)
    monkeypatch.chdir(REPO_ROOT)  # examples name files relative to the repository root
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    tests = doctest.DocTestFinder().find(module, name)
    for test in tests:
        runner.run(test, out=report.write)
    assert sum(len(t.examples) for t in tests) > 0, f"{name}: no examples found"
    assert runner.failures == 0, report.getvalue()
