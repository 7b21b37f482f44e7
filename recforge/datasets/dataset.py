"""``RecDataset``: an ``IterableDataset`` of :class:`Batch` objects, plus its DataLoader."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Optional, cast

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from recforge.datasets.batch import Batch
from recforge.datasets.data_parser import DataParser
from recforge.datasets.errors import DataError, locate_row_error
from recforge.datasets.readers import ORIGIN_FILE, ORIGIN_ROW, BaseReader, create_reader, slot_rows
from recforge.datasets.sample_mask import SampleMask
from recforge.datasets.sampler import NegativeSampler, SequenceSplitter, sampler_for
from recforge.errors import RecforgeError
from recforge.features.base_feature import BaseFeature
from recforge.protos import data_pb2

logger = logging.getLogger(__name__)

MODES = ("train", "eval", "predict")


def candidate_sequence(
    features: Sequence[BaseFeature], id_field: str
) -> Optional[SequenceSplitter]:
    """The sequence feature reading the sampler's item id column (several positives per row).

    None when no sequence feature reads it, or a scalar feature reads it too (one per row).
    """
    readers = [f for f in features if id_field in f.inputs]
    sequences = [f for f in readers if f.is_sequence and hasattr(f, "split_sequence")]
    if not sequences or len(sequences) != len(readers):
        return None
    return cast(SequenceSplitter, sequences[0])


def _rank_and_world_size() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class RecDataset(IterableDataset):
    """Stream :class:`Batch` objects from CSV / parquet files described by a ``DataConfig``.

    Each iterator (one per DataLoader worker per rank) reads its own slot of the input:
    ``slot = worker_id * world_size + rank`` of ``world_size * num_workers`` slots (see
    :func:`~recforge.datasets.readers.slot_rows`: every slot reads as many batches, so ranks
    stepping in lock-step train every row once per epoch).

    An error in the data names the file, the row in that file (not in the shuffled batch) and
    whether it is the train, eval or predict input.

    With ``data_config.negative_sampler`` (match models), train and eval batches get
    ``num_sample`` (eval: ``num_eval_sample`` if set) negative item rows appended from the item
    table (:mod:`recforge.datasets.sampler`; ``negative_sampler_v2`` and the hard-negative
    samplers also read user-item edge tables, :mod:`recforge.datasets.edge_sampler`); each
    iterator draws with its own generator seeded
    by ``(data_config.seed, rank, worker, epoch)``. Training batches mask the ``use_mask``
    features in a random ``sample_mask_prob`` of the rows (:mod:`recforge.datasets.sample_mask`).

    Args:
        data_config: the ``DataConfig`` message.
        features: the features to parse (``recforge.features.create_features``).
        input_path: comma-separated files / directories / globs.
        mode: ``"train"`` (``batch_size``; shuffle and ``drop_remainder`` as configured),
            ``"eval"`` or ``"predict"`` (``eval_batch_size`` or ``batch_size``). Labels and
            sample weights are parsed in train and eval mode only.
        reserved_columns: columns passed through to ``Batch.reserves`` (predict outputs).
        batch_size: overrides the configured batch size.
        extra_id_columns: columns hashed into ``Batch.extras`` (e.g. a grouped-AUC key).
        binary_labels: label columns that must hold 0 or 1 (those of binary losses).
        jagged_labels: label columns with one value per candidate, each to its delimiter
            (see ``DataParser``).

    Raises:
        DataError: unknown mode, no label fields in train / eval mode, no input file.

    """

    def __init__(
        self,
        data_config: data_pb2.DataConfig,
        features: Sequence[BaseFeature],
        input_path: str,
        mode: str = "train",
        reserved_columns: Sequence[str] = (),
        batch_size: Optional[int] = None,
        extra_id_columns: Sequence[str] = (),
        binary_labels: Sequence[str] = (),
        jagged_labels: Optional[dict[str, str]] = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise DataError(f"mode must be one of {MODES}, found '{mode}'")
        labels = list(data_config.label_fields) if mode != "predict" else []
        if mode != "predict" and not labels:
            raise DataError(f"data_config.label_fields is empty, but mode '{mode}' needs labels")
        weights = list(data_config.sample_weight_fields) if mode != "predict" else []
        if batch_size is None:
            batch_size = data_config.batch_size
            if mode != "train" and data_config.eval_batch_size:
                batch_size = data_config.eval_batch_size
        self.data_config = data_config
        self.mode = mode
        self.parser = DataParser(
            features,
            labels=labels,
            sample_weights=weights,
            reserved_columns=reserved_columns,
            extra_id_columns=extra_id_columns,
            binary_labels=binary_labels if mode != "predict" else (),
            jagged_labels=jagged_labels if mode != "predict" else None,
        )
        training = mode == "train"
        # match models: negatives from an item table appended to each train / eval batch
        self.sampler: Optional[NegativeSampler] = sampler_for(data_config, mode)
        if self.sampler is not None:
            self.sampler.candidate_sequence = candidate_sequence(features, self.sampler.id_field)
        columns = self.parser.input_columns
        if self.sampler is not None:
            columns = [*columns, *(c for c in self.sampler.input_columns if c not in columns)]
        try:
            self.reader: BaseReader = create_reader(
                data_config,
                input_path,
                batch_size=int(batch_size),
                selected_columns=columns,
                drop_remainder=training and data_config.drop_remainder,
                shuffle=training and data_config.shuffle,
                seed=data_config.seed,
            )
        except DataError as err:
            raise self._in_input(err) from None
        self.sample_mask: Optional[SampleMask] = None
        if training:
            sample_mask = SampleMask(data_config, features)
            self.sample_mask = sample_mask if sample_mask.enabled else None
        self._epoch = 0
        self.check_columns()

    def _in_input(self, error: RecforgeError, where: str = "") -> DataError:
        """``error`` as a DataError saying which input it is about (and where, when given)."""
        return DataError(f"{where}{error} ({self.mode} input)")

    def check_columns(self) -> None:
        """Check up front that the first input file has every column the parser needs.

        Raises:
            DataError: naming the missing column, what needs it, the file and its columns.

        """
        try:
            names = self.reader.column_names()
        except DataError as err:
            raise self._in_input(err) from None
        try:
            self.parser.check_columns(names)
        except DataError as err:
            raise self._in_input(err, f"{self.reader.files[0]}: ") from None

    def plan(self, num_workers: int) -> None:
        """Count the input's rows (before workers start) and log rows no rank will train.

        With several slots (ranks x workers) the reader counts the rows of every file; doing
        it here, in the main process, spares each worker the count. Every row is read once per
        epoch unless ``drop_remainder`` leaves short batches out, or there are fewer rows than
        slots: then ranks step together only as long as each has a row, and what is left over
        is logged with the option that controls it.

        Args:
            num_workers: DataLoader workers per rank (0 reads in the main process: one slot).

        """
        _, world_size = _rank_and_world_size()
        slots = world_size * max(num_workers, 1)
        if slots == 1:  # one reader reads everything (drop_remainder: but the last batch)
            return
        try:
            total = self.reader.num_rows()
        except DataError as err:
            raise self._in_input(err) from None
        if self.mode == "predict":  # no lock-step: every slot reads all of its rows
            return
        rows, batches = slot_rows(total, slots, self.reader.batch_size, self.reader.drop_remainder)
        if batches is None:  # fewer rows than slots: one row per slot, ranks stop together
            per_rank = [
                sum(rows[w * world_size + r] for w in range(max(num_workers, 1)))
                for r in range(world_size)
            ]
            trained = world_size * min(per_rank)
        else:
            trained = sum(rows)
        left = total - trained
        if left and _rank_and_world_size()[0] == 0:
            option = (
                "data_config.drop_remainder"
                if self.reader.drop_remainder
                else "data_config.num_workers (fewer rows than ranks x workers)"
            )
            logger.warning(
                "%s input: %d of its %d rows are not read each epoch (%s)",
                self.mode,
                left,
                total,
                option,
            )

    @property
    def batch_size(self) -> int:
        """Rows per batch."""
        return self.reader.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch the next iteration reads (changes the shuffle order)."""
        self._epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:
        """Yield this rank's and worker's batches for the current epoch, then advance it.

        Each ``iter()`` reads one epoch and moves to the next, so that persistent DataLoader
        workers, which hold their own copy of the dataset, walk through the epochs in step with
        the trainer's ``iter(dataloader)`` calls.
        """
        epoch = self._epoch
        self._epoch += 1
        rank, world_size = _rank_and_world_size()
        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # worker-major: with fewer rows than slots, the rows spread over the ranks first
        slot = worker_id * world_size + rank
        rng = np.random.default_rng([self.data_config.seed, rank, worker_id, epoch, 17])
        mask = self.sample_mask
        mask_rng = np.random.default_rng([self.data_config.seed, rank, worker_id, epoch, 29])
        batches = self.reader.iter_batches(slot, world_size * num_workers, epoch, with_origin=True)
        while True:
            try:
                rb = next(batches)
            except StopIteration:
                return
            except DataError as err:
                raise self._in_input(err) from None
            rb, origin = split_origin(rb)
            num_positives = rb.num_rows
            extras: dict[str, torch.Tensor] = {}
            if self.sampler is not None:
                rb, extras = self.sampler.append_negatives(
                    rb, rng, self.parser.labels, self.parser.sample_weights
                )
            try:
                if mask is None:
                    batch = self.parser.parse_batch(rb)
                else:
                    rows = mask.draw(mask_rng, rb.num_rows, rb.num_rows - num_positives)
                    batch = self.parser.parse_batch(rb, rows, mask.features)
            except RecforgeError as err:
                raise self.locate(err, origin) from None
            batch.extras.update(extras)
            yield batch

    def locate(self, error: RecforgeError, origin: tuple[pa.Array, pa.Array]) -> DataError:
        """``error`` about a row of a batch, placed at its file and row in that file.

        Args:
            error: raised while parsing the batch.
            origin: the batch's :data:`ORIGIN_FILE` and :data:`ORIGIN_ROW` columns (see
                :func:`split_origin`).

        """
        files, rows = origin
        names = [self.reader.files[i] for i in files.to_numpy()]
        csv_header: Optional[int] = int(self.reader.data_config.with_header)
        if self.reader.data_config.dataset_type != data_pb2.CsvDataset:
            csv_header = None
        return DataError(locate_row_error(error, names, rows.to_numpy(), csv_header, self.mode))


def split_origin(rb: pa.RecordBatch) -> tuple[pa.RecordBatch, tuple[pa.Array, pa.Array]]:
    """Take the origin columns (``iter_batches(with_origin=True)``) off a record batch."""
    origin = (rb.column(ORIGIN_FILE), rb.column(ORIGIN_ROW))
    return rb.drop_columns([ORIGIN_FILE, ORIGIN_ROW]), origin


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)


def create_dataloader(
    dataset: RecDataset, num_workers: Optional[int] = None, persistent: bool = False
) -> DataLoader:
    """Wrap a :class:`RecDataset` in a ``DataLoader`` (the dataset already batches).

    Args:
        dataset: the dataset.
        num_workers: worker processes (``None``: ``data_config.num_workers``; 0 reads in the
            main process). Each worker uses a single torch thread.
        persistent: keep the workers between epochs (each ``iter()`` of the loader reads the
            dataset's next epoch). Forking a new worker per epoch cost the trainer ~0.25 s per
            epoch on a 2-core CPU: after a fork, the trainer's first writes to its pages
            (weights, optimizer state) are copied.

    Returns:
        A ``DataLoader`` with ``batch_size=None`` yielding :class:`Batch` objects; memory is
        pinned only when CUDA is available and ``data_config.pin_memory`` is set.

    """
    if num_workers is None:
        num_workers = int(dataset.data_config.num_workers)
    dataset.plan(num_workers)
    pin_memory = bool(dataset.data_config.pin_memory) and torch.cuda.is_available()
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent and num_workers > 0,
        # its own generator: starting workers must not draw from the global RNG, which
        # dropout uses and checkpoints save, or a resumed run would see other dropout masks
        generator=torch.Generator().manual_seed(int(dataset.data_config.seed)),
        prefetch_factor=4 if num_workers > 0 else None,
        worker_init_fn=_worker_init if num_workers > 0 else None,
    )
