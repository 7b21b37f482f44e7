"""The evaluation pipeline: ``recforge evaluate --config ... --checkpoint ...``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from recforge.config import ConfigError
from recforge.datasets.dataset import RecDataset, create_dataloader
from recforge.errors import DataError
from recforge.models.factory import build_model
from recforge.models.model import BaseModel, TrainWrapper
from recforge.utils import checkpoint as ckpt_util
from recforge.utils import dist as dist_util
from recforge.utils import storage
from recforge.utils.dense_ema import ema_for_inference, use_dense_ema
from recforge.utils.layout import EVAL_HISTORY_FILE, EVAL_RESULT_FILE, checkpoint_or_latest
from recforge.utils.logging_util import setup_logging
from recforge.utils.pipeline import (
    build_dataset,
    build_features,
    model_dir_path,
    prepare_config,
    setup_process,
)
from recforge.utils.sharding import shard_model

if TYPE_CHECKING:
    from recforge.protos import pipeline_pb2

logger = logging.getLogger(__name__)


def run_evaluation(
    sharded_model: nn.Module,
    model: BaseModel,
    dataset: RecDataset,
    config: pipeline_pb2.EasyRecConfig,
    device: torch.device,
) -> dict[str, float]:
    """Streams ``dataset`` through the model and returns its metrics (collective call).

    Args:
        sharded_model: the DMP-wrapped ``TrainWrapper`` (returns losses and predictions).
        model: the inner model, which holds the metrics.
        dataset: the eval data.
        config: the pipeline config (``eval_config.num_steps`` limits the steps).
        device: this rank's device.

    """
    num_steps = config.eval_config.num_steps or None
    log_every = max(config.eval_config.log_step_count_steps, 1)
    sharded_model.eval()
    dataset.set_epoch(0)  # every evaluation reads the same data (and the same eval negatives)
    iterator = iter(create_dataloader(dataset, config.data_config.num_workers))
    step, samples, start = 0, 0, time.perf_counter()
    with torch.no_grad():
        while num_steps is None or step < num_steps:
            batch = next(iterator, None)
            if not dist_util.all_ranks_have(batch is not None):
                break
            assert batch is not None  # every rank has one
            batch = batch.to(device, non_blocking=True)
            _, (losses, predictions, batch) = sharded_model(batch)
            model.update_metric(predictions, batch, losses)
            step += 1
            samples += batch.batch_size
            if step % log_every == 0 and dist_util.rank() == 0:
                logger.info(
                    "eval step %d | %.0f samples/s", step, samples / (time.perf_counter() - start)
                )
    samples = dist_util.all_reduce_sum(samples)  # a rank may get no batch of a tiny eval set
    if samples == 0:
        raise DataError(
            f"{config.eval_input_path}: expected rows to evaluate, found none (eval input)"
        )
    metrics = {name: float(value) for name, value in model.compute_metric().items()}
    sharded_model.train()
    if dist_util.rank() == 0:
        shown = ", ".join(f"{k} {v:.5f}" for k, v in metrics.items())
        logger.info("eval over %d samples (%d steps): %s", samples, step, shown)
    return metrics


def write_eval_result(
    config: pipeline_pb2.EasyRecConfig,
    metrics: dict[str, float],
    global_step: int,
    filename: str = EVAL_RESULT_FILE,
) -> str:
    """Writes ``model_dir/<filename>`` (and appends to ``eval_history.jsonl``).

    Args:
        config: the pipeline config (for ``model_dir``).
        metrics: the metrics.
        global_step: the step of the evaluated checkpoint.
        filename: the result file, relative to ``model_dir`` (or absolute).

    """
    record = {"global_step": global_step, **metrics}
    path = model_dir_path(config, filename)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    with open(model_dir_path(config, EVAL_HISTORY_FILE), "a") as f:
        f.write(json.dumps(record) + "\n")
    return path


def evaluate(
    config_path: str,
    checkpoint_path: Optional[str] = None,
    eval_input_path: Optional[str] = None,
    edits: Optional[dict[str, str]] = None,
    plugins: Sequence[str] = (),
    model_dir: Optional[str] = None,
    eval_result_filename: Optional[str] = None,
) -> dict[str, float]:
    """Evaluates a checkpoint on the eval data and writes ``model_dir/eval_result.json``.

    Args:
        config_path: the pipeline config file.
        checkpoint_path: the checkpoint directory (default: newest in ``model_dir``).
        eval_input_path: overrides the config's ``eval_input_path``.
        edits: ``{"dotted.field": "value"}`` config overrides.
        plugins: modules to import first.
        model_dir: overrides the config's ``model_dir``.
        eval_result_filename: writes the metrics to this file in ``model_dir`` instead of
            ``eval_result.json`` (TorchEasyRec's ``--eval_result_filename``; its file holds a
            JSON line per evaluation, ours the last one as ``eval_result.json`` does).

    Returns:
        The metrics.

    """
    setup_logging()
    config = prepare_config(config_path, edits, plugins, model_dir)
    if eval_input_path:
        config.eval_input_path = eval_input_path
    if not config.eval_input_path:
        raise ConfigError(
            "nothing to evaluate: set eval_input_path in the config, or --eval_input_path",
            config_path,
            field="eval_input_path",
        )
    checkpoint_path = checkpoint_or_latest(
        config.model_dir, storage.fetch(checkpoint_path, "checkpoint") if checkpoint_path else None
    )
    device = setup_process()
    features = build_features(config)
    dataset = build_dataset(config, features, "eval")
    model = build_model(config, features, embedding_device=torch.device("meta"))
    # the same sharding plan as training, so the checkpoint maps one to one
    train_config = config.train_config if config.HasField("train_config") else None
    eval_config = config.eval_config
    ema = ema_for_inference(
        use_dense_ema(eval_config, train_config),
        eval_config.HasField("use_dense_ema"),
        checkpoint_path,
        model,
        train_config,
    )
    sharded = shard_model(TrainWrapper(model, dense_ema=ema), device, train_config)
    state = ckpt_util.load_checkpoint(checkpoint_path, sharded.model)
    if dist_util.rank() == 0:
        logger.info("evaluating checkpoint %s (step %s)", checkpoint_path, state.get("global_step"))
    if ema is not None:  # evaluate the moving averages of the dense parameters
        ema.bind(model)
        ema.copy_to_model()
    metrics = run_evaluation(sharded.model, model, dataset, config, device)
    if dist_util.rank() == 0:
        write_eval_result(
            config,
            metrics,
            int(state.get("global_step", 0)),
            eval_result_filename or EVAL_RESULT_FILE,
        )
    return metrics
