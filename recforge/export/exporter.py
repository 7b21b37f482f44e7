"""``recforge export``: a checkpoint as a TorchScript export directory.

Restores a checkpoint into a plain (unsharded) CPU model (:mod:`recforge.export.restore`),
compiles and checks it (:mod:`recforge.export.scripting`), describes it
(:mod:`recforge.export.model_info`) and writes the directory atomically
(:mod:`recforge.export.files`); a match model also gets its towers
(:mod:`recforge.export.towers`). A full disk stops the export with a one-line
:class:`ExportError` and leaves an earlier export as it was.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

import torch

from recforge.config import ConfigError
from recforge.config.export_precision import (
    MLP_DTYPE_NAMES,
    export_mlp_dtype,
    warn_if_trained_otherwise,
)
from recforge.errors import ExportError
from recforge.export.files import (
    replace_dir,
    temp_dir_beside,
    write_export_files,
    write_feature_files,
)
from recforge.export.model_info import FORMAT_VERSION, describe_model, versions
from recforge.export.restore import restore_model, select_checkpoint
from recforge.export.scripting import check_scripted, script_model
from recforge.export.towers import export_towers
from recforge.models.match_model import MatchModel
from recforge.models.model import BaseModel
from recforge.modules.mlp import MLP
from recforge.utils import storage
from recforge.utils.disk import disk_full_message, is_disk_full
from recforge.utils.id_hash import ID_HASH, ID_HASH_KEY
from recforge.utils.layout import MODEL_FILE
from recforge.utils.logging_util import setup_logging
from recforge.utils.pipeline import prepare_config

if TYPE_CHECKING:
    from recforge.protos import pipeline_pb2

logger = logging.getLogger(__name__)

# export_config.mlp_dtype -> the MLPs' compute dtype (None: as trained)
MLP_DTYPES = {name: None if name == "float32" else getattr(torch, name) for name in MLP_DTYPE_NAMES}


def set_mlp_dtype(model: torch.nn.Module, name: str) -> str:
    """Makes every ``MLP`` of ``model`` store and compute in ``export_config.mlp_dtype``.

    Returns:
        The dtype's name.

    Raises:
        ConfigError: an unknown dtype name (naming the field and the known names).

    """
    if name not in MLP_DTYPES:
        raise ConfigError(
            f"unknown mlp_dtype {name!r} (known: {', '.join(MLP_DTYPES)})",
            field="export_config.mlp_dtype",
        )
    dtype = MLP_DTYPES[name]
    if dtype is torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        logger.warning(
            "export_config.mlp_dtype bfloat16: this CPU has no native bfloat16 matmul"
            " (AVX512-BF16 / AMX); the exported model will be slower than with float32 here"
        )
    if dtype is torch.float16 and not torch.cuda.is_available():
        logger.warning(
            "export_config float16 MLPs: CPUs compute float16 matmuls slowly; the exported"
            " model will be slower than with float32 on a CPU (bfloat16 is the CPU choice)"
        )
    for module in model.modules():
        if isinstance(module, MLP):
            module.set_compute_dtype(dtype)
    return name


def _write_export(
    directory: str,
    scripted: torch.jit.ScriptModule,
    config: pipeline_pb2.EasyRecConfig,
    model: BaseModel,
    info: dict[str, Any],
) -> None:
    """Writes the export files (and a match model's tower directories) into ``directory``."""
    from google.protobuf import text_format

    exported = write_feature_files(directory, config)
    write_export_files(directory, scripted, text_format.MessageToString(exported), info)
    if isinstance(model, MatchModel):  # user and item towers as separate scripted modules
        shared = ("format_version", "checkpoint", "global_step", ID_HASH_KEY, "versions")
        export_towers(
            config, model, directory, {**{k: info[k] for k in shared}, "model_file": MODEL_FILE}
        )


def export_model(
    config_path: str,
    export_dir: str,
    checkpoint_path: Optional[str] = None,
    edits: Optional[dict[str, str]] = None,
    plugins: Sequence[str] = (),
    model_dir: Optional[str] = None,
) -> dict[str, Any]:
    """Exports a checkpoint of the config's model as a TorchScript model directory.

    Args:
        config_path: the pipeline config (e.g. ``model_dir/pipeline.config``).
        export_dir: the directory to write (replaced if it holds an earlier export).
        checkpoint_path: the checkpoint (default: per ``export_config.exporter_type``:
            ``latest`` or ``best`` by ``best_exporter_metric`` in ``eval_history.jsonl``).
        edits: ``{"dotted.field": "value"}`` config overrides.
        plugins: modules to import first (user models).
        model_dir: overrides the config's ``model_dir``.

    Returns:
        A summary: export_dir, checkpoint, global_step, model class, outputs.

    Raises:
        ExportError, CheckpointError: see :func:`select_checkpoint` and :func:`restore_model`;
            ExportError also when the disk fills up while writing.

    """
    if storage.is_remote(export_dir):
        return _export_remote(config_path, export_dir, checkpoint_path, edits, plugins, model_dir)
    setup_logging()
    config = prepare_config(config_path, edits, plugins, model_dir)
    checkpoint_path = select_checkpoint(config, checkpoint_path)
    logger.info("exporting %s", checkpoint_path)
    model, state = restore_model(config, checkpoint_path, config.export_config)
    # the export's pipeline.config names a remote model_dir by its URL, not its working copy
    config.model_dir = storage.remote_of(config.model_dir) or config.model_dir
    for param in model.parameters():
        param.requires_grad_(False)  # serving needs no autograd graph
    mlp_dtype = set_mlp_dtype(model, export_mlp_dtype(config.export_config))
    warn_if_trained_otherwise(config.train_config.mixed_precision, mlp_dtype)
    scripted = script_model(model)
    batch_size = 3
    outputs = check_scripted(scripted, model, batch_size)

    export_dir = os.path.normpath(export_dir)
    info = {
        "format_version": FORMAT_VERSION,
        "model_class": type(model).__name__,
        "model_file": MODEL_FILE,
        "checkpoint": storage.remote_of(checkpoint_path) or os.path.abspath(checkpoint_path),
        "global_step": int(state.get("global_step", 0)),
        "mlp_dtype": mlp_dtype,
        # restore_model refused a checkpoint bucketed by another hash: the export hashes ids
        # as this version does, which load_predictor checks
        ID_HASH_KEY: ID_HASH,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "versions": versions(),
        "usage": (
            f"import torch, torchrec; model = torch.jit.load('{MODEL_FILE}');"
            " outputs = model(inputs)  # inputs: {tensor name: tensor} as listed in 'inputs'"
        ),
        **describe_model(model.features, outputs, batch_size),
    }
    tmp = None
    try:
        os.makedirs(os.path.dirname(os.path.abspath(export_dir)), exist_ok=True)
        tmp = temp_dir_beside(export_dir, "tmp")
        _write_export(tmp, scripted, config, model, info)
        replace_dir(tmp, export_dir)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e):
            raise ExportError(
                f"{disk_full_message(export_dir, e)} while writing the export; free space or"
                " choose another export_dir (an earlier export there is kept)"
            ) from None
        raise
    logger.info(
        "exported %s (step %d) to %s; outputs %s",
        info["model_class"],
        info["global_step"],
        export_dir,
        [o["name"] for o in info["outputs"]],
    )
    return {
        "export_dir": export_dir,
        "checkpoint": info["checkpoint"],
        "global_step": info["global_step"],
        "model_class": info["model_class"],
        "outputs": [o["name"] for o in info["outputs"]],
    }


def _export_remote(
    config_path: str,
    export_dir: str,
    checkpoint_path: Optional[str],
    edits: Optional[dict[str, str]],
    plugins: Sequence[str],
    model_dir: Optional[str],
) -> dict[str, Any]:
    """:func:`export_model` to a URL: exports to a local directory, then publishes it there.

    The upload goes to ``<export_dir>.tmp-<pid>`` first and replaces ``export_dir`` once
    complete (see :func:`recforge.utils.storage.publish_dir`).
    """
    storage.check_url(export_dir, "--export_dir")
    work = storage.local_temp_dir("export")
    try:
        local = os.path.join(work, "export")
        result = export_model(config_path, local, checkpoint_path, edits, plugins, model_dir)
        storage.publish_dir(local, export_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("uploaded the export to %s", export_dir)
    return {**result, "export_dir": export_dir}
