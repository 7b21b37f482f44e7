"""Class registries filled by a metaclass, and loading of user plugins.

Defining a subclass of a registered base class registers it by class name, so a config that
names ``deepfm`` builds ``DeepFM`` without any table to keep in sync.
"""

from __future__ import annotations

import abc
import difflib
import importlib
import os
import warnings
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

from recforge.errors import RecforgeError

PLUGIN_ENTRY_POINT_GROUP = "recforge.plugins"


class RegistryError(RecforgeError, KeyError):
    """An unknown class name was asked of a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class PluginError(RecforgeError, ImportError):
    """A plugin module named in the config or on the command line cannot be imported."""


def get_register_class_meta(class_map: dict[str, type], have_abstract_class: bool = True) -> type:
    """Returns a metaclass that registers every class it creates in ``class_map``.

    Args:
        class_map: filled with ``{class.__name__: class}``.
        have_abstract_class: also register classes that still have abstract methods.

    Returns:
        An ``ABCMeta`` subclass; use it as ``metaclass=`` of a base class, whose
        ``create_class`` classmethod then calls :func:`create_class` on ``class_map``.

    """

    class RegisterABCMeta(abc.ABCMeta):
        def __new__(mcs, name: str, bases: tuple, attrs: dict[str, Any]) -> type:
            new_class = super().__new__(mcs, name, bases, attrs)
            if have_abstract_class or not getattr(new_class, "__abstractmethods__", None):
                register_class(class_map, name, new_class)
            return new_class

    return RegisterABCMeta


def register_class(class_map: dict[str, type], name: str, cls: type) -> None:
    """Adds ``cls`` to ``class_map`` as ``name``; a name stays with the class that took it.

    Configs name a class by its name (``deepfm`` builds ``DeepFM``), so a second class of the
    same name would silently change what a config builds: that is an error, as in
    TorchEasyRec. The one exception is the same definition run again (same module and
    qualified name: ``importlib.reload`` while developing a plugin), which replaces the old
    class with a warning.

    Raises:
        RegistryError: another class already has the name; the message names both.

    """
    known = class_map.get(name)
    if known is not None and known is not cls:
        where = f"{cls.__module__}.{cls.__qualname__}"
        known_where = f"{known.__module__}.{known.__qualname__}"
        if where != known_where:
            raise RegistryError(
                f"{cls.__module__}: two classes are named '{name}': {known_where} and {where};"
                " rename one (a config picks a class by its name)"
            )
        warnings.warn(
            f"{where} was defined again; the new definition replaces the old one", stacklevel=3
        )
    class_map[name] = cls


def create_class(class_map: dict[str, type], class_name: str) -> type:
    """Looks up ``class_name`` in ``class_map``.

    Raises:
        RegistryError: unknown name; the message lists the registered names and the closest one.

    """
    if class_name in class_map:
        return class_map[class_name]
    known = sorted(class_map)
    close = difflib.get_close_matches(class_name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise RegistryError(f"unknown class '{class_name}'{hint} (registered: {', '.join(known)})")


def import_modules(names: Iterable[str]) -> None:
    """Imports each named module (user plugins defining models, features, ...).

    Raises:
        PluginError: naming the plugin module that failed (and, when its own code raised,
            the file and line that raised).

    """
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise PluginError(f"cannot import plugin module '{name}': {e}") from e
        except Exception as e:  # the plugin's own code failed: say where
            raise PluginError(
                f"{_raising_line(e)}: plugin module '{name}' failed on import: "
                f"{type(e).__name__}: {e}"
            ) from e


def _raising_line(error: BaseException) -> str:
    """``FILE:LINE`` of the innermost frame of ``error``'s traceback."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    path = tb.tb_frame.f_code.co_filename
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return f"{path if relative.startswith('..') else relative}:{tb.tb_lineno}"


def load_entry_point_plugins(group: str = PLUGIN_ENTRY_POINT_GROUP) -> None:
    """Imports every module registered under the ``recforge.plugins`` entry-point group."""
    for entry_point in metadata.entry_points(group=group):
        loaded = entry_point.load()
        if callable(loaded) and not isinstance(loaded, type):
            loaded()


def lazy_import_all(package: str, modules: Iterable[str]) -> Callable[[], None]:
    """Returns a function that imports ``package.<m>`` for every ``m`` once, on first call."""
    done = False

    def _load() -> None:
        nonlocal done
        if not done:
            done = True
            for module in modules:
                importlib.import_module(f"{package}.{module}")

    return _load
