"""The training pipeline: ``recforge train --config ...``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Optional

import torch

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.datasets.dataset import RecDataset, create_dataloader
from recforge.errors import DataError, Preempted
from recforge.evaluate import run_evaluation, write_eval_result
from recforge.models.factory import build_model
from recforge.models.model import BaseModel, TrainWrapper
from recforge.optim import sparse_optimizer_spec
from recforge.utils import checkpoint as ckpt_util
from recforge.utils import dist as dist_util
from recforge.utils import layout, storage
from recforge.utils.arrow_pandas import defer_pandas_in_pyarrow
from recforge.utils.dense_ema import (
    DenseEMA,
    checkpoint_has_ema,
    create_dense_ema,
    detached,
    use_dense_ema,
)
from recforge.utils.early_stopping import EarlyStopping
from recforge.utils.embedding_files import file_backed_tables, resolve_dir
from recforge.utils.logging_util import Throughput, setup_logging
from recforge.utils.memory_estimate import check_training_memory, estimate_training_memory
from recforge.utils.model_summary import summarize_model
from recforge.utils.pipeline import (
    build_dataset,
    build_features,
    model_dir_path,
    prepare_config,
    set_tf32,
    setup_process,
)
from recforge.utils.preemption import StopSignals
from recforge.utils.profiling import train_profiler
from recforge.utils.progress import TrainProgress, is_terminal
from recforge.utils.run_dir import claim_model_dir
from recforge.utils.sharding import ShardedTraining, shard_model, user_table_constraints
from recforge.utils.train_step import TrainStep
from recforge.utils.warm_start import warm_start

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from recforge.protos import pipeline_pb2

logger = logging.getLogger(__name__)


def _summary_writer(log_dir: str, purge_step: Optional[int] = None) -> SummaryWriter:
    """A TensorBoard writer; imported only when a run logs (TensorBoard pulls in large packages)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir, purge_step=purge_step)


def _next_batch(iterator: Iterator[Batch]) -> Optional[Batch]:
    return next(iterator, None)


class _Trainer:
    """One training run: holds the sharded model, data, progress and writers."""

    def __init__(
        self,
        config: pipeline_pb2.EasyRecConfig,
        sharded: ShardedTraining,
        model: BaseModel,
        device: torch.device,
        train_step: TrainStep,
    ):
        self.config = config
        self.train_config = config.train_config
        self.sharded = sharded
        self.model = model
        self.device = device
        self.train_step = train_step
        self.dense_ema: Optional[DenseEMA] = train_step.ema
        self.eval_dense_ema = self.dense_ema is not None and use_dense_ema(
            config.eval_config, self.train_config
        )
        self.global_step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.is_chief = dist_util.rank() == 0
        self.writer = (
            _summary_writer(model_dir_path(config, layout.TRAIN_SUMMARY_DIR))
            if self.is_chief and self.train_config.use_tensorboard
            else None
        )
        self.last_saved_step = -1
        self.last_saved_path = ""
        self.last_eval: Optional[tuple[int, dict[str, float]]] = None
        self.epoch_stats: list = []
        self.progress = TrainProgress(enabled=False)
        self.early_stopping = (
            EarlyStopping.from_config(self.train_config.early_stopping)
            if self.train_config.HasField("early_stopping")
            else None
        )

    def save(self) -> None:
        state = {
            "global_step": self.global_step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
        }
        path = ckpt_util.save_checkpoint(
            self.config.model_dir,
            self.global_step,
            self.sharded.model,
            self.sharded.optimizer,
            state,
            self.train_config.keep_checkpoint_max,
        )
        self.last_saved_step, self.last_saved_path = self.global_step, path
        if self.is_chief:
            logger.info("saved checkpoint %s", storage.remote_of(path) or path)

    def restore(self, checkpoint_path: str, ignore_restore_optimizer: bool = False) -> None:
        optimizer = None if ignore_restore_optimizer else self.sharded.optimizer
        ema = self.dense_ema
        without_ema = ema is not None and not checkpoint_has_ema(checkpoint_path)
        if without_ema and self.is_chief:
            logger.warning(
                "%s holds no dense EMA: the averages start from the restored weights",
                checkpoint_path,
            )
        with detached(self.sharded.model) if without_ema else contextlib.nullcontext():
            state = ckpt_util.load_checkpoint(
                checkpoint_path, self.sharded.model, optimizer, restore_rng=True
            )
        if ema is not None and without_ema:
            ema.reset()
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.last_saved_step, self.last_saved_path = self.global_step, checkpoint_path
        if self.writer is not None:
            # points an interrupted run logged after this checkpoint are hidden, not doubled
            self.writer.close()
            self.writer = _summary_writer(
                model_dir_path(self.config, layout.TRAIN_SUMMARY_DIR),
                purge_step=self.global_step + 1,
            )
        if self.early_stopping is not None:
            self.early_stopping.replay(
                os.path.join(self.config.model_dir, layout.EARLY_STOPPING_FILE), self.global_step
            )
        if self.is_chief:
            logger.info(
                "resumed from %s at step %d (epoch %d, step %d of the epoch)",
                checkpoint_path,
                self.global_step,
                self.epoch,
                self.step_in_epoch,
            )

    def _log(
        self,
        loss: torch.Tensor,
        losses: dict[str, torch.Tensor],
        meter: Throughput,
        batch_size: int,
    ) -> None:
        rate, eta = meter.report(self.global_step, batch_size)
        rate *= dist_util.world_size()  # every rank trains its own batch of the same size
        # computing a metric syncs it across ranks: every rank must take part
        train_metrics = {k: float(v) for k, v in self.model.compute_train_metric().items()}
        self.model.reset_train_metric()  # each log line covers its own window of batches
        if not self.is_chief:
            return
        lrs = {f"lr/{name}": s.last_lr for name, s in self._named_schedules()}
        logged = {**train_metrics}
        logged.update({k: float(v) for k, v in losses.items() if k.startswith("pareto_weight_")})
        extra = "".join(f" | {k} {v:.4f}" for k, v in logged.items())
        if self.progress.active:  # the bar shows step, ETA and these
            self.progress.show(self.epoch, float(loss.detach()), rate, extra)
        else:
            logger.info(
                "step %d | epoch %d | loss %.5f | %.0f samples/s | eta %s%s",
                self.global_step,
                self.epoch,
                float(loss.detach()),
                rate,
                eta,
                extra,
            )
        if self.writer is not None:
            self.writer.add_scalar("loss/total", float(loss.detach()), self.global_step)
            for name, value in losses.items():
                self.writer.add_scalar(f"loss/{name}", float(value), self.global_step)
            for name, scalar in {**lrs, **train_metrics}.items():
                self.writer.add_scalar(name, scalar, self.global_step)
            self.writer.add_scalar("samples_per_second", rate, self.global_step)

    def _named_schedules(self) -> list[tuple[str, Any]]:
        """The learning-rate schedules named as their optimizers (sparse, dense, dense_part0).

        TorchEasyRec tags them ``lr/g<i>`` by param group; names say which rate is which.
        """
        schedules = self.sharded.schedules
        names = [name for name, _ in getattr(self.sharded.optimizer, "optimizers", [])]
        if len(names) != len(schedules):
            names = [str(i) for i in range(len(schedules))]
        return list(zip(names, schedules))

    def evaluate(self, eval_dataset: Optional[RecDataset]) -> dict[str, float]:
        if eval_dataset is None:
            return {}
        if self.last_eval is not None and self.last_eval[0] == self.global_step:
            return self.last_eval[1]
        ema = self.dense_ema if self.eval_dense_ema else None
        swapped = ema.swapped() if ema is not None else contextlib.nullcontext()
        with swapped:
            metrics = run_evaluation(
                self.sharded.model, self.model, eval_dataset, self.config, self.device
            )
        self.last_eval = (self.global_step, metrics)
        if self.early_stopping is not None:
            self._update_early_stopping(metrics)
        if self.is_chief:
            write_eval_result(self.config, metrics, self.global_step)
            if self.writer is not None:
                eval_writer = _summary_writer(
                    model_dir_path(self.config, layout.EVAL_SUMMARY_DIR),
                    purge_step=self.global_step,  # an earlier, interrupted run's later points
                )
                for name, value in metrics.items():
                    eval_writer.add_scalar(name, value, self.global_step)
                eval_writer.close()
        return metrics

    def _update_early_stopping(self, metrics: dict[str, float]) -> None:
        stopping = self.early_stopping
        assert stopping is not None
        saved = self.last_saved_path if self.last_saved_step == self.global_step else ""
        stopping.update(self.global_step, metrics, saved)
        if not self.is_chief:
            return
        stopping.write(model_dir_path(self.config, layout.EARLY_STOPPING_FILE))
        if stopping.should_stop and stopping.best is not None:
            best = stopping.history[stopping.best]
            logger.info(
                "early stopping at step %d: %s has not improved for %d evaluations; best %.5f"
                " at step %d (%s)",
                self.global_step,
                stopping.metric,
                stopping.evaluations_without_improvement,
                best[1],
                best[0],
                best[2] or "no checkpoint",
            )

    def _stopping_early(self) -> bool:
        return self.early_stopping is not None and self.early_stopping.should_stop

    def fit(
        self, train_dataset: RecDataset, eval_dataset: Optional[RecDataset]
    ) -> dict[str, float]:
        tc = self.train_config
        num_epochs = tc.num_epochs if tc.HasField("num_epochs") else (0 if tc.num_steps else 1)
        num_steps = tc.num_steps or None
        self.sharded.model.train()
        meter = Throughput(num_steps)
        train_dataset.set_epoch(self.epoch)
        num_workers = self.config.data_config.num_workers
        if num_workers and (os.cpu_count() or 1) <= 2 and self.is_chief:
            logger.info(
                "data_config.num_workers is %d on a machine with %d cores: reading in the"
                " trainer process (num_workers: 0) was 5-10%% faster on 2 cores"
                " (benchmarks/README.md, Fast defaults)",
                num_workers,
                os.cpu_count(),
            )
        signals = StopSignals()
        self.progress = TrainProgress(
            enabled=self.is_chief and is_terminal(), initial=self.global_step, total=num_steps
        )
        with signals, self.progress.logs_above():  # signals: before the loader forks workers
            try:
                stop_signal = self._train_loop(
                    train_dataset, eval_dataset, signals, num_epochs, num_steps, meter
                )
            finally:
                self.progress.close()
            if self.last_saved_step != self.global_step:
                self.save()
        if stop_signal:
            if self.writer is not None:
                self.writer.close()
            saved = storage.remote_of(self.last_saved_path) or self.last_saved_path
            raise Preempted(stop_signal, self.global_step, saved)
        metrics = self.evaluate(eval_dataset)
        if self.is_chief:
            with open(model_dir_path(self.config, layout.TRAIN_STATS_FILE), "w") as f:
                json.dump(
                    {"global_step": self.global_step, "epochs": self.epoch_stats}, f, indent=1
                )
        if self.writer is not None:
            self.writer.close()
        return metrics

    def _train_loop(
        self,
        train_dataset: RecDataset,
        eval_dataset: Optional[RecDataset],
        signals: StopSignals,
        num_epochs: int,
        num_steps: Optional[int],
        meter: Throughput,
    ) -> int:
        """Trains until the end, or until a signal asks to stop (returns that signal, or 0)."""
        tc = self.train_config
        log_every = max(tc.log_step_count_steps, 1)
        eval_every = self.config.eval_config.eval_steps
        dmp = self.sharded.model
        batch_size = self.config.data_config.batch_size
        done = (num_steps is not None and self.global_step >= num_steps) or self._stopping_early()
        stop_signal = 0
        loader = create_dataloader(
            train_dataset, self.config.data_config.num_workers, persistent=True
        )
        profiler = train_profiler(self.config.model_dir, tc.is_profiling)
        while not done and (num_epochs == 0 or self.epoch < num_epochs):
            iterator = iter(loader)  # reads epoch self.epoch (see RecDataset.__iter__)
            for _ in range(self.step_in_epoch):  # resuming inside an epoch: skip what was trained
                _next_batch(iterator)
            first_step_in_epoch = self.step_in_epoch
            epoch_start, epoch_samples = time.perf_counter(), 0
            epoch_loss = torch.zeros((), device=self.device)  # summed without a sync per step
            while True:
                # a stopping rank reads no further: its loader workers may have had the signal
                batch = None if signals.signum else _next_batch(iterator)
                has_batch, stop_signal = dist_util.step_consensus(batch is not None, signals.signum)
                if stop_signal or not has_batch:
                    break
                assert batch is not None  # every rank has one
                batch = batch.to(self.device, non_blocking=True)
                for schedule in self.sharded.schedules:
                    schedule.update(self.global_step, self.epoch)
                loss, (losses, predictions, batch) = dmp(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss became {float(loss)} at step {self.global_step + 1}: check the"
                        " input for NaN/inf values and the learning rates"
                    )
                self.train_step.backward(loss)
                self.train_step.step(self.global_step + 1)
                self.global_step += 1
                self.step_in_epoch += 1
                self.progress.step(meter.total_steps)
                epoch_samples += batch.batch_size
                epoch_loss += loss.detach().float()
                meter.add(batch.batch_size)
                if self.model.has_train_metrics:
                    self.model.update_train_metric(predictions, batch)
                if self.global_step % log_every == 0:
                    self._log(loss, losses, meter, batch_size)
                if profiler is not None:
                    profiler.step()
                # as in TorchEasyRec, every checkpoint is evaluated (eval_history.jsonl)
                every = tc.save_checkpoints_steps
                saving = bool(every) and self.global_step % every == 0
                if saving:
                    self.save()
                if saving or (eval_every and self.global_step % eval_every == 0):
                    self.evaluate(eval_dataset)
                    dmp.train()
                if self._stopping_early() or (
                    num_steps is not None and self.global_step >= num_steps
                ):
                    done = True
                    break
            if stop_signal:  # the epoch's end comes when the resumed run reaches it
                break
            seconds = time.perf_counter() - epoch_start
            batches_in_epoch = self.step_in_epoch - first_step_in_epoch
            epoch_samples = dist_util.all_reduce_sum(epoch_samples)
            self.epoch_stats.append(
                {
                    "epoch": self.epoch,
                    "steps": self.step_in_epoch,
                    "samples": epoch_samples,
                    "seconds": seconds,
                }
            )
            if self.is_chief:  # at least one line per epoch, however short
                logger.info(
                    "epoch %d done: %d samples in %.1fs (%.0f samples/s) | mean loss %.5f",
                    self.epoch,
                    epoch_samples,
                    seconds,
                    epoch_samples / max(seconds, 1e-9),
                    float(epoch_loss) / max(batches_in_epoch, 1),
                )
            if not done:
                self.epoch += 1
                self.step_in_epoch = 0
                if num_steps is None and num_epochs:
                    meter.total_steps = self.global_step * num_epochs // max(self.epoch, 1)
                every_epochs = tc.save_checkpoints_epochs
                # early stopping judges every epoch (a checkpoint to go back to included)
                if self.early_stopping is not None or (
                    every_epochs and self.epoch % every_epochs == 0
                ):
                    self.save()
                    self.evaluate(eval_dataset)
                    dmp.train()
                    done = self._stopping_early()
            if self.global_step == 0:
                raise DataError(
                    f"{self.config.train_input_path}: expected rows to train on, found none"
                    " (train input)"
                )
        if profiler is not None:
            profiler.stop()
        return stop_signal


def train_and_evaluate(
    config_path: str,
    continue_train: bool = False,
    edits: Optional[dict[str, str]] = None,
    plugins: Sequence[str] = (),
    model_dir: Optional[str] = None,
    fine_tune_checkpoint: Optional[str] = None,
    overwrite: bool = False,
    ignore_restore_optimizer: bool = False,
) -> dict[str, float]:
    """Trains the model a config describes, checkpoints it, and evaluates it.

    One run per ``model_dir``: the run holds a lock on it (see :mod:`recforge.utils.run_lock`),
    and a ``model_dir`` holding an earlier run needs ``continue_train`` or ``overwrite``.

    Args:
        config_path: the pipeline config file.
        continue_train: resume from the newest checkpoint in ``model_dir`` (same steps, same
            data order, same results as an uninterrupted run).
        edits: ``{"dotted.field": "value"}`` config overrides.
        plugins: modules to import first (user models / features).
        model_dir: overrides the config's ``model_dir``.
        fine_tune_checkpoint: warm start from this checkpoint (or the newest in this
            directory): restores the tensors that fit, see :mod:`recforge.utils.warm_start`.
        overwrite: move an earlier run in ``model_dir`` to ``<model_dir>.old-<time>`` first.
        ignore_restore_optimizer: restore weights only, leaving the optimizer state fresh
            (with ``continue_train`` or a warm start).

    Returns:
        The final eval metrics (empty without ``eval_input_path``).

    Raises:
        ConfigError: ``model_dir`` is in use by another run, or holds an earlier run and
            neither ``continue_train`` nor ``overwrite`` is set.
        Preempted: SIGTERM or SIGINT stopped the run after it saved a checkpoint.

    """
    setup_logging()
    defer_pandas_in_pyarrow()  # before the first batch: pandas is not needed to train
    config = prepare_config(config_path, edits, plugins, model_dir)
    if config.train_config.HasField("early_stopping"):
        EarlyStopping.from_config(config.train_config.early_stopping)  # bad settings: fail now
    if config.train_config.HasField("early_stopping") and not config.eval_input_path:
        raise ConfigError(
            "expected eval_input_path for early stopping to evaluate on, found none",
            config_path,
            field="train_config.early_stopping",
        )
    device = setup_process()
    set_tf32(config.train_config)
    seed = config.data_config.seed
    torch.manual_seed(seed)
    features = build_features(config)
    train_dataset = build_dataset(config, features, "train")
    eval_dataset = build_dataset(config, features, "eval") if config.eval_input_path else None
    model = build_model(config, features, embedding_device=torch.device("meta"))
    if dist_util.rank() == 0:
        for line in summarize_model(model).lines():
            logger.info("%s", line)
    _, frozen = model.sparse_parameters()
    tc = config.train_config
    wrapper = TrainWrapper(model, tc.mixed_precision, dense_ema=create_dense_ema(tc, model))
    constraints = user_table_constraints(features, tc)
    file_dir = resolve_dir(tc.embedding_file_dir, config.model_dir) if tc.embedding_file_dir else ""
    estimate = estimate_training_memory(
        wrapper,
        sparse_optimizer_spec(tc.sparse_optimizer),
        device,
        frozen,
        [t for t, c in constraints.items() if c.kernels and "fused" not in c.kernels],
        file_backed=bool(file_dir),
    )
    disk = shutil.disk_usage(file_dir).free if file_dir else None
    check_training_memory(estimate, config=config, disk_available=disk)
    with file_backed_tables(file_dir) as file_tables:
        sharded = shard_model(wrapper, device, tc, frozen, constraints)
    if file_tables and dist_util.rank() == 0:
        logger.info("embedding tables %s are memory-mapped from files in %s", file_tables, file_dir)
    ema = getattr(wrapper, "dense_ema", None)
    train_step = TrainStep(tc, sharded.optimizer, model, device, ema)
    # claimed only now: a config or data error must not move an earlier run aside
    fine_tune_source = fine_tune_checkpoint or config.train_config.fine_tune_checkpoint or None
    lock, fine_tune = claim_model_dir(
        config.model_dir,
        continue_train,
        overwrite,
        storage.fetch(fine_tune_source, "fine_tune") if fine_tune_source else None,
    )
    try:
        if dist_util.rank() == 0:
            with open(model_dir_path(config, layout.CONFIG_FILE), "w") as f:
                from google.protobuf import text_format

                saved = config
                remote = storage.remote_of(config.model_dir)
                if remote:  # the URL, not the run's local working copy
                    saved = type(config)()
                    saved.CopyFrom(config)
                    saved.model_dir = remote
                f.write(text_format.MessageToString(saved))
        trainer = _Trainer(config, sharded, model, device, train_step)
        checkpoint = layout.latest_checkpoint(config.model_dir) if continue_train else None
        if checkpoint:
            trainer.restore(checkpoint, ignore_restore_optimizer)
        else:
            if continue_train and dist_util.rank() == 0:
                logger.info("no checkpoint in %s: training from scratch", config.model_dir)
            if fine_tune:
                optimizer = None if ignore_restore_optimizer else sharded.optimizer
                fine_tune_map = tc.fine_tune_ckpt_param_map or None
                warm_start(fine_tune, sharded.model, optimizer, fine_tune_map, train_step.ema)
        return trainer.fit(train_dataset, eval_dataset)
    finally:
        if lock is not None:
            lock.release()
