"""``RecDataset``: an ``IterableDataset`` of :class:`Batch` objects, plus its DataLoader."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from recforge.datasets.batch import Batch
from recforge.datasets.data_parser import DataParser
from recforge.datasets.errors import DataError
from recforge.datasets.readers import BaseReader, create_reader
from recforge.datasets.sample_mask import SampleMask
from recforge.datasets.sampler import NegativeSampler, sampler_for
from recforge.features.base_feature import BaseFeature

MODES = ("train", "eval", "predict")


def _rank_and_world_size() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class RecDataset(IterableDataset):
    """Stream :class:`Batch` objects from CSV / parquet files described by a ``DataConfig``.

    Each iterator (one per DataLoader worker per rank) reads its own slot of the input:
    ``slot = rank * num_workers + worker_id`` of ``world_size * num_workers`` slots (see
    :class:`~recforge.datasets.readers.BaseReader` for how slots split files / batches).

    With ``data_config.negative_sampler`` (match models), train and eval batches get
    ``num_sample`` (eval: ``num_eval_sample`` if set) negative item rows appended from the item
    table (:mod:`recforge.datasets.sampler`); each iterator draws with its own generator seeded
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

    Raises:
        DataError: unknown mode, no label fields in train / eval mode, no input file.

    """

    def __init__(
        self,
        data_config: Any,
        features: Sequence[BaseFeature],
        input_path: str,
        mode: str = "train",
        reserved_columns: Sequence[str] = (),
        batch_size: Optional[int] = None,
        extra_id_columns: Sequence[str] = (),
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
        )
        training = mode == "train"
        # match models: negatives from an item table appended to each train / eval batch
        self.sampler: Optional[NegativeSampler] = sampler_for(data_config, mode)
        columns = self.parser.input_columns
        if self.sampler is not None and self.sampler.id_field not in columns:
            columns = [*columns, self.sampler.id_field]
        self.reader: BaseReader = create_reader(
            data_config,
            input_path,
            batch_size=int(batch_size),
            selected_columns=columns,
            drop_remainder=training and data_config.drop_remainder,
            shuffle=training and data_config.shuffle,
            seed=data_config.seed,
        )
        self.sample_mask: Optional[SampleMask] = None
        if training:
            sample_mask = SampleMask(data_config, features)
            self.sample_mask = sample_mask if sample_mask.enabled else None
        self._epoch = 0
        self.check_columns()

    def check_columns(self) -> None:
        """Check up front that the first input file has every column the parser needs.

        Raises:
            DataError: naming the missing column, what needs it, the file and its columns.

        """
        try:
            self.parser.check_columns(self.reader.column_names())
        except DataError as err:
            raise DataError(f"{self.reader.files[0]}: {err}") from None

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
        slot = rank * num_workers + worker_id
        rng = np.random.default_rng([self.data_config.seed, rank, worker_id, epoch, 17])
        mask = self.sample_mask
        mask_rng = np.random.default_rng([self.data_config.seed, rank, worker_id, epoch, 29])
        for rb in self.reader.iter_batches(slot, world_size * num_workers, epoch):
            num_positives = rb.num_rows
            extras: dict[str, torch.Tensor] = {}
            if self.sampler is not None:
                rb, extras = self.sampler.append_negatives(
                    rb, rng, self.parser.labels, self.parser.sample_weights
                )
            if mask is None:
                batch = self.parser.parse_batch(rb)
            else:
                rows = mask.draw(mask_rng, rb.num_rows, rb.num_rows - num_positives)
                batch = self.parser.parse_batch(rb, rows, mask.features)
            batch.extras.update(extras)
            yield batch


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
