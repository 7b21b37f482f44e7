"""The example configs (``examples/*.config``), loaded with their paths moved.

The files are the one source of the example configs: nothing here writes a config, it loads
one and only rebases its data paths (``data_dir``) and sets ``model_dir``. They ship inside
the package (``recforge/examples`` links to the repository's ``examples/``), so
``recforge demo`` works from an installed wheel. A new ``examples/<name>.config`` needs
nothing else: :func:`example_names` lists the folder.
"""

from __future__ import annotations

import glob
import os
from typing import Optional

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from recforge.config import ConfigError, load_pipeline_config
from recforge.protos import pipeline_pb2

#: the folder of the example configs (inside the package; the repository's ``examples/``)
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
#: the suffix of every data path field (``train_input_path``, samplers' ``*input_path``)
_INPUT_PATH_SUFFIX = "input_path"


def example_names(suffix: str = "") -> list[str]:
    """List the example configs.

    Args:
        suffix: keep only names ending with it (e.g. ``"_demo"``).

    Returns:
        The sorted names (file names without ``.config``).

    """
    paths = glob.glob(os.path.join(EXAMPLES_DIR, f"*{suffix}.config"))
    return sorted(os.path.basename(p)[: -len(".config")] for p in paths)


def example_path(name: str) -> str:
    """Return the file of the example config ``name`` (e.g. ``"deepfm_demo"``).

    Raises:
        ConfigError: no such example (the message lists the ones there are).

    """
    path = os.path.join(EXAMPLES_DIR, f"{name}.config")
    if not os.path.isfile(path):
        known = ", ".join(example_names()) or "none: the package was installed without them"
        raise ConfigError(f"no example config '{name}' (examples: {known})", EXAMPLES_DIR)
    return path


def load_example_config(
    name: str, data_dir: Optional[str] = None, model_dir: Optional[str] = None
) -> pipeline_pb2.EasyRecConfig:
    """Load an example config, optionally reading its data from ``data_dir``.

    Args:
        name: the example (``examples/<name>.config``).
        data_dir: where its data lies instead: every data path (``train_input_path``,
            ``eval_input_path``, the samplers' ``*input_path``) in the folder of
            ``train_input_path`` moves to ``data_dir`` with its file name kept.
        model_dir: the ``model_dir`` to set.

    Returns:
        The config (not validated: the examples are, by the tests).

    Raises:
        ConfigError: no such example, or it does not parse.

    """
    config = load_pipeline_config(example_path(name))
    if data_dir is not None:
        source_dir = os.path.dirname(config.train_input_path.split(",")[0])
        _rebase_input_paths(config, source_dir, data_dir)
    if model_dir is not None:
        config.model_dir = model_dir
    return config


def _rebase_input_paths(message: Message, source_dir: str, data_dir: str) -> None:
    """Move each ``*input_path`` in ``source_dir`` (comma-separated lists too) to ``data_dir``."""
    for fd, value in message.ListFields():
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.GetOptions().map_entry:
                value_fd = fd.message_type.fields_by_name["value"]
                is_message = value_fd.type == FieldDescriptor.TYPE_MESSAGE
                children = list(value.values()) if is_message else []
            elif fd.is_repeated:
                children = list(value)
            else:
                children = [value]
            for child in children:
                _rebase_input_paths(child, source_dir, data_dir)
        elif (
            fd.type == FieldDescriptor.TYPE_STRING
            and not fd.is_repeated
            and fd.name.endswith(_INPUT_PATH_SUFFIX)
        ):
            setattr(message, fd.name, _rebase(value, source_dir, data_dir))


def _rebase(paths: str, source_dir: str, data_dir: str) -> str:
    """Move the comma-separated ``paths`` that lie in ``source_dir`` to ``data_dir``."""
    moved = [
        os.path.join(data_dir, os.path.basename(p)) if os.path.dirname(p) == source_dir else p
        for p in paths.split(",")
    ]
    return ",".join(moved)
