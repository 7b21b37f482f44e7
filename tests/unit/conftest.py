"""Every test here is marked ``unit``, and starting a process (subprocess or multiprocessing,
DataLoader workers included) fails it: such tests belong in tests/e2e."""

import contextlib
import multiprocessing.process
import os
import subprocess
from collections.abc import Iterator

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if str(item.path).startswith(HERE + os.sep):
            item.add_marker(pytest.mark.unit)


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise AssertionError(
            f"a unit test started a process ({what}); tests that do belong in tests/e2e"
        )

    return refuse


@contextlib.contextmanager
def _no_processes() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", _refuse("subprocess.Popen"))
        patch.setattr(multiprocessing.process.BaseProcess, "start", _refuse("multiprocessing"))
        yield


# hooks rather than an autouse fixture, so that module-scoped fixtures are covered too
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _no_processes():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _no_processes():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    with _no_processes():
        yield
