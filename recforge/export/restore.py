"""Which checkpoint to export, and restoring it into a plain CPU model."""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, Optional, Union

import torch

from recforge.errors import CheckpointError, ExportError
from recforge.models.factory import build_model
from recforge.models.model import BaseModel, TrainWrapper
from recforge.utils import checkpoint as ckpt_util
from recforge.utils import layout, storage
from recforge.utils.dense_ema import ema_for_inference, use_dense_ema
from recforge.utils.pipeline import build_features

if TYPE_CHECKING:
    from recforge.protos import eval_pb2, export_pb2, pipeline_pb2

logger = logging.getLogger(__name__)


def best_checkpoint(model_dir: str, metric: str, bigger_is_better: bool = True) -> str:
    """The checkpoint whose step scored best on ``metric`` in ``model_dir/eval_history.jsonl``.

    Only evaluations at the step of a checkpoint still in ``model_dir`` count; on a tie the
    later step wins.

    Raises:
        ExportError: no eval history, the metric was never recorded, or no evaluated step
            has a checkpoint.

    """
    history = os.path.join(model_dir, layout.EVAL_HISTORY_FILE)
    if not os.path.isfile(history):
        raise ExportError(
            f"export_config.exporter_type 'best' needs {history} (written by evaluation during"
            " training); it does not exist"
        )
    checkpoints = {layout.checkpoint_step(p): p for p in layout.list_checkpoints(model_dir)}
    if not checkpoints:
        raise CheckpointError(f"no checkpoint found in model_dir '{model_dir}'")
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
            f" (checkpoint steps: {sorted(checkpoints)})"  # type: ignore[type-var]  # all named
        )
    return checkpoints[best[1]]


def select_checkpoint(
    config: pipeline_pb2.EasyRecConfig, checkpoint_path: Optional[str] = None
) -> str:
    """The checkpoint to export: the one given, else per ``export_config.exporter_type``.

    Raises:
        ExportError: unknown exporter type or no usable eval history for ``best``.
        CheckpointError: no checkpoint in ``model_dir``.

    """
    if checkpoint_path:
        return storage.fetch(checkpoint_path, "checkpoint")
    export_config = config.export_config
    exporter = export_config.exporter_type or "latest"
    if exporter == "latest":
        return layout.checkpoint_or_latest(config.model_dir)
    if exporter == "best":
        return best_checkpoint(
            config.model_dir,
            export_config.best_exporter_metric,
            export_config.metric_larger_is_better,
        )
    raise ExportError(f"export_config.exporter_type must be 'latest' or 'best', found '{exporter}'")


def restore_model(
    config: pipeline_pb2.EasyRecConfig,
    checkpoint_path: str,
    weights_from: Optional[Union[export_pb2.ExportConfig, eval_pb2.EvalConfig]] = None,
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
