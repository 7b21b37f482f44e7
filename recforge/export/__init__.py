"""Export: ``recforge export --config ... --export_dir ...`` and ``python -m recforge.export``.

The package imports nothing of the command line: ``python -m recforge.export`` (TorchEasyRec's
flags) is :mod:`recforge.export.__main__`, which hands over to :mod:`recforge.tzrec_commands`.

Restores a checkpoint into a plain (unsharded) CPU model, compiles it with
:func:`recforge.export.scripting.script_model`, checks it against the eager model and writes
the export directory (file names in :mod:`recforge.utils.layout`):

* ``scripted_model.pt``: the TorchScript model, ``forward(Dict[str, Tensor]) -> Dict[str,
  Tensor]`` over the flat tensor dict of ``DataParser.parse``; load it with
  ``import torchrec; torch.jit.load(path)`` (torchrec registers the fbgemm operators).
* ``pipeline.config``: the config (features, data options) that predict parses input with.
* ``model_info.json``: inputs (per feature: kind, tensors, dtypes, source columns), outputs
  (names, dtypes, shapes), the checkpoint, the id hash and versions.
* ``fg.json``: the features' FG plan in TorchEasyRec's format
  (:mod:`recforge.features.fg_json`).
* ``assets/``: copies of the files the features read, named by the exported config relative
  to the directory (:mod:`recforge.export.assets`), so the directory can be moved.
* match models (DSSM, ...) also get ``user/`` and ``item/``: each tower as its own export
  directory of the same files (see :func:`recforge.export.towers.export_towers`).

Modules: :mod:`~recforge.export.exporter` (the command), :mod:`~recforge.export.restore`
(which checkpoint, restoring it), :mod:`~recforge.export.scripting` (TorchScript and the
eager-equality check), :mod:`~recforge.export.towers` (match-model towers),
:mod:`~recforge.export.model_info` (``model_info.json``), :mod:`~recforge.export.files`
(writing the directory atomically), :mod:`~recforge.export.assets` (the features' files).
"""

from __future__ import annotations

from recforge.export.exporter import MLP_DTYPES, export_model, set_mlp_dtype
from recforge.export.files import replace_dir, temp_dir_beside, write_export_files
from recforge.export.model_info import FORMAT_VERSION, describe_model
from recforge.export.restore import best_checkpoint, restore_model, select_checkpoint
from recforge.export.scripting import (
    ScriptWrapper,
    TowerScriptWrapper,
    check_scripted,
    example_inputs,
    script_model,
    script_tower,
)
from recforge.export.towers import export_towers, tower_config
from recforge.utils.layout import EVAL_HISTORY_FILE

__all__ = [
    "EVAL_HISTORY_FILE",
    "FORMAT_VERSION",
    "MLP_DTYPES",
    "ScriptWrapper",
    "TowerScriptWrapper",
    "best_checkpoint",
    "check_scripted",
    "describe_model",
    "example_inputs",
    "export_model",
    "export_towers",
    "replace_dir",
    "restore_model",
    "script_model",
    "script_tower",
    "select_checkpoint",
    "set_mlp_dtype",
    "temp_dir_beside",
    "tower_config",
    "write_export_files",
]
