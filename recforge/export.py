"""The export pipeline: ``recforge export --config ... --export_dir ...``.

Restores a checkpoint into a plain (unsharded) CPU model, compiles it with
:func:`recforge.models.script_wrapper.script_model` and writes the export directory:

* ``scripted_model.pt``: the TorchScript model, ``forward(Dict[str, Tensor]) -> Dict[str,
  Tensor]`` over the flat tensor dict of ``DataParser.parse``; load it with
  ``import torchrec; torch.jit.load(path)`` (torchrec registers the fbgemm operators).
* ``pipeline.config``: the config (features, data options) that predict parses input with.
* ``model_info.json``: inputs (per feature: kind, tensors, dtypes, source columns), outputs
  (names, dtypes, shapes), the checkpoint and versions.
* match models (DSSM, ...) also get ``user/`` and ``item/``: each tower as its own export
  directory of the same three files (see :func:`recforge.retrieval.export_towers`).

The directory is written under a hidden, uniquely named temporary directory beside
``export_dir`` and renamed when complete; an earlier export is moved aside (also under a
unique name) and deleted only once the new one is in place, so paths a user owns, such as
``<export_dir>.old`` or ``<export_dir>.tmp``, are never touched. A full disk stops the export
with a one-line :class:`ExportError` and leaves an earlier export as it was.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any, Optional

import torch

from recforge.config import ConfigError
from recforge.errors import ExportError
from recforge.features import BaseFeature
from recforge.models.model import BaseModel, TrainWrapper
from recforge.modules.mlp import MLP
from recforge.predictor import CONFIG_FILE, MODEL_FILE, MODEL_INFO_FILE
from recforge.utils import checkpoint as ckpt_util
from recforge.utils.dense_ema import ema_for_inference, use_dense_ema
from recforge.utils.disk import disk_full_message, is_disk_full, save_scripted
from recforge.utils.logging_util import setup_logging
from recforge.utils.pipeline import build_features, build_model, prepare_config

logger = logging.getLogger(__name__)

EVAL_HISTORY_FILE = "eval_history.jsonl"
FORMAT_VERSION = 1
# export_config.mlp_dtype -> the MLPs' compute dtype (None: as trained)
MLP_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


def _checkpoint_step(path: str) -> Optional[int]:
    name = os.path.basename(os.path.normpath(path))
    suffix = name[len(ckpt_util.CHECKPOINT_PREFIX) :]
    return (
        int(suffix) if name.startswith(ckpt_util.CHECKPOINT_PREFIX) and suffix.isdigit() else None
    )


def best_checkpoint(model_dir: str, metric: str, bigger_is_better: bool = True) -> str:
    """The checkpoint whose step scored best on ``metric`` in ``model_dir/eval_history.jsonl``.

    Only evaluations at the step of a checkpoint still in ``model_dir`` count; on a tie the
    later step wins.

    Raises:
        ExportError: no eval history, the metric was never recorded, or no evaluated step
            has a checkpoint.

    """
    history = os.path.join(model_dir, EVAL_HISTORY_FILE)
    if not os.path.isfile(history):
        raise ExportError(
            f"export_config.exporter_type 'best' needs {history} (written by evaluation during"
            " training); it does not exist"
        )
    checkpoints = {_checkpoint_step(p): p for p in ckpt_util.list_checkpoints(model_dir)}
    if not checkpoints:
        raise ckpt_util.CheckpointError(f"no checkpoint found in model_dir '{model_dir}'")
    seen_metrics: set[str] = set()
    best: Optional[tuple[float, int]] = None
    with open(history) as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            seen_metrics.update(k for k in record if k != "global_step")
            step = int(record.get("global_step", -1))
            if metric not in record or step not in checkpoints:
                continue
            value = float(record[metric])
            score = (value if bigger_is_better else -value, step)
            if best is None or score >= best:
                best = score
    if best is None:
        if metric not in seen_metrics:
            raise ExportError(
                f"export_config.best_exporter_metric '{metric}' is not in {history}; recorded"
                f" metrics: {sorted(seen_metrics)}"
            )
        raise ExportError(
            f"no evaluation in {history} is at the step of a checkpoint in '{model_dir}'"
            f" (checkpoint steps: {sorted(checkpoints)})"
        )
    return checkpoints[best[1]]


def select_checkpoint(config: Any, checkpoint_path: Optional[str] = None) -> str:
    """The checkpoint to export: the one given, else per ``export_config.exporter_type``.

    Raises:
        ExportError: unknown exporter type or no usable eval history for ``best``.
        CheckpointError: no checkpoint in ``model_dir``.

    """
    if checkpoint_path:
        return checkpoint_path
    export_config = config.export_config
    exporter = export_config.exporter_type or "latest"
    if exporter == "latest":
        path = ckpt_util.latest_checkpoint(config.model_dir)
        if not path:
            raise ckpt_util.CheckpointError(
                f"no checkpoint found in model_dir '{config.model_dir}'"
            )
        return path
    if exporter == "best":
        return best_checkpoint(
            config.model_dir,
            export_config.best_exporter_metric,
            export_config.metric_larger_is_better,
        )
    raise ExportError(f"export_config.exporter_type must be 'latest' or 'best', found '{exporter}'")


def restore_model(
    config: Any, checkpoint_path: str, weights_from: Optional[Any] = None
) -> tuple[BaseModel, dict[str, Any]]:
    """Builds the config's model with CPU tables and loads a checkpoint into it.

    The torch.distributed checkpoint of a sharded training run (any world size) is resharded
    by DCP into the plain model's full tensors; no process group is needed.

    Args:
        config: the pipeline config.
        checkpoint_path: the checkpoint.
        weights_from: the ``ExportConfig`` / ``EvalConfig`` whose ``use_dense_ema`` decides
            whether the dense parameters get the checkpoint's moving averages (see
            :mod:`recforge.utils.dense_ema`); None: the raw weights.

    Returns:
        ``(model in eval mode, the checkpoint's train state)``.

    Raises:
        CheckpointError: missing, incomplete or mismatching checkpoint.

    """
    features = build_features(config)
    model = build_model(config, features, embedding_device=torch.device("cpu"))
    ema = None
    if weights_from is not None:
        train_config = config.train_config if config.HasField("train_config") else None
        ema = ema_for_inference(
            use_dense_ema(weights_from, train_config),
            weights_from.HasField("use_dense_ema"),
            checkpoint_path,
            model,
            train_config,
        )
    state = ckpt_util.load_checkpoint(checkpoint_path, TrainWrapper(model, dense_ema=ema))
    if ema is not None:
        ema.bind(model)
        ema.copy_to_model()
        logger.info("dense parameters: the moving averages (use_dense_ema)")
    return model.eval(), state


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shape(tensor: torch.Tensor, batch_size: int) -> list:
    return ["B" if i == 0 and n == batch_size else int(n) for i, n in enumerate(tensor.shape)]


def describe_model(
    model_features: Sequence[BaseFeature], outputs: dict[str, torch.Tensor], batch_size: int
) -> dict:
    """The ``inputs``/``features``/``outputs`` part of ``model_info.json``."""
    features, inputs = [], []
    for feature in model_features:
        kind = "sparse" if feature.is_sparse else "dense"
        if feature.is_sparse:
            tensors = [
                {"name": f"{feature.name}.values", "dtype": "int64", "shape": ["N"]},
                {"name": f"{feature.name}.lengths", "dtype": "int32", "shape": ["B"]},
            ]
        else:
            tensors = [
                {
                    "name": f"{feature.name}.values",
                    "dtype": "float32",
                    "shape": ["B", feature.dense_width],
                }
            ]
        entry = {
            "name": feature.name,
            "type": type(feature).__name__,
            "kind": kind,
            "source_columns": list(feature.inputs),
            "tensors": [t["name"] for t in tensors],
        }
        if feature.is_sparse:
            entry["embedding_dim"] = feature.embedding_dim
            entry["num_embeddings"] = feature.num_embeddings
        else:
            entry["value_dim"] = feature.value_dim
        features.append(entry)
        inputs += [{**t, "feature": feature.name, "kind": kind} for t in tensors]
    columns = list(dict.fromkeys(c for f in model_features for c in f.inputs))
    return {
        "features": features,
        "inputs": inputs,
        "input_columns": columns,
        "outputs": [
            {"name": k, "dtype": _dtype_name(v.dtype), "shape": _shape(v, batch_size)}
            for k, v in outputs.items()
        ],
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("recforge", "torch", "torchrec", "fbgemm-gpu-cpu", "fbgemm-gpu"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _check_scripted(
    scripted: torch.jit.ScriptModule, model: BaseModel, batch_size: int
) -> dict[str, torch.Tensor]:
    """Runs both on example inputs; raises when they disagree. Returns the outputs."""
    from recforge.datasets.data_parser import DataParser
    from recforge.models.script_wrapper import example_inputs

    data = example_inputs(model, batch_size)
    with torch.no_grad():
        eager = model.predict(DataParser(model.features).to_batch(data))
        script = scripted(data)
    if set(eager) != set(script):
        raise RuntimeError(f"scripted outputs {sorted(script)} != eager outputs {sorted(eager)}")
    for name, value in eager.items():
        diff = (value.float() - script[name].float()).abs().max().item() if value.numel() else 0
        if not diff <= 1e-5:
            raise RuntimeError(f"scripted output '{name}' differs from eager by {diff}")
    return script


def _temp_dir_beside(path: str, purpose: str) -> str:
    """A new, uniquely named hidden directory next to ``path`` (same file system)."""
    parent, name = os.path.split(os.path.abspath(path))
    return tempfile.mkdtemp(prefix=f".{name}.{purpose}-", dir=parent)


def _replace_dir(tmp: str, final: str) -> None:
    """Moves ``tmp`` to ``final``, replacing an earlier export there.

    The earlier export is first moved into a fresh directory beside ``final`` and removed
    only after ``tmp`` took its place (moved back if that rename fails).

    Raises:
        ExportError: ``final`` exists and is not an export directory.

    """
    if not os.path.exists(final):
        os.replace(tmp, final)
        return
    if not (
        os.path.isdir(final)
        and (not os.listdir(final) or os.path.isfile(os.path.join(final, MODEL_INFO_FILE)))
    ):
        raise ExportError(
            f"export_dir '{final}' exists and is not a recforge export directory (no"
            f" {MODEL_INFO_FILE}); choose another export_dir"
        )
    holder = _temp_dir_beside(final, "old")
    previous = os.path.join(holder, "previous")
    os.replace(final, previous)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(previous, final)
        shutil.rmtree(holder, ignore_errors=True)
        raise
    shutil.rmtree(holder, ignore_errors=True)


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
    for module in model.modules():
        if isinstance(module, MLP):
            module.set_compute_dtype(dtype)
    return name


def _write_export(
    directory: str,
    scripted: torch.jit.ScriptModule,
    config: Any,
    model: BaseModel,
    info: dict[str, Any],
    config_text: str,
) -> None:
    """Writes the export files (and a match model's tower directories) into ``directory``."""
    save_scripted(scripted, os.path.join(directory, MODEL_FILE))
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        f.write(config_text)
    with open(os.path.join(directory, MODEL_INFO_FILE), "w") as f:
        json.dump(info, f, indent=1)
    from recforge.models.match_model import MatchModel

    if isinstance(model, MatchModel):  # user and item towers as separate scripted modules
        from recforge.retrieval import export_towers

        shared = {k: info[k] for k in ("format_version", "checkpoint", "global_step", "versions")}
        export_towers(config, model, directory, {**shared, "model_file": MODEL_FILE})


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
    from google.protobuf import text_format

    from recforge.models.script_wrapper import script_model

    setup_logging()
    config = prepare_config(config_path, edits, plugins, model_dir)
    checkpoint_path = select_checkpoint(config, checkpoint_path)
    logger.info("exporting %s", checkpoint_path)
    model, state = restore_model(config, checkpoint_path, config.export_config)
    for param in model.parameters():
        param.requires_grad_(False)  # serving needs no autograd graph
    mlp_dtype = set_mlp_dtype(model, config.export_config.mlp_dtype)
    scripted = script_model(model)
    batch_size = 3
    outputs = _check_scripted(scripted, model, batch_size)

    export_dir = os.path.normpath(export_dir)
    info = {
        "format_version": FORMAT_VERSION,
        "model_class": type(model).__name__,
        "model_file": MODEL_FILE,
        "checkpoint": os.path.abspath(checkpoint_path),
        "global_step": int(state.get("global_step", 0)),
        "mlp_dtype": mlp_dtype,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "versions": _versions(),
        "usage": (
            "import torch, torchrec; model = torch.jit.load('scripted_model.pt');"
            " outputs = model(inputs)  # inputs: {tensor name: tensor} as listed in 'inputs'"
        ),
        **describe_model(model.features, outputs, batch_size),
    }
    tmp = None
    try:
        os.makedirs(os.path.dirname(os.path.abspath(export_dir)), exist_ok=True)
        tmp = _temp_dir_beside(export_dir, "tmp")
        _write_export(tmp, scripted, config, model, info, text_format.MessageToString(config))
        _replace_dir(tmp, export_dir)
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


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m recforge.export``: export with TorchEasyRec's flags.

    ``--pipeline_config_path --export_dir --checkpoint_path --asset_files``; see
    :mod:`recforge.tzrec_commands`.
    """
    from recforge.tzrec_commands import main as run

    return run("export", argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
