"""How much memory training will take, checked before anything is allocated.

The model is built with its embedding tables on the meta device, so each table's shape and
dtype are known for free. Per table the estimate counts its weights, the sparse optimizer's
state and, for tables off fbgemm's fused kernel, a full-size dense gradient; dense parameters
count weights, gradients and two optimizer slots. A zch table counts ``zch_size`` rows, and
its remapper's buffers (replicated) count as dense memory. A job that would not fit stops with one
line naming what it needs, what the machine has and which settings would fit, instead of
being killed by the kernel's out-of-memory killer with no message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch
from torch import nn

from recforge.config.errors import ConfigError
from recforge.optim.optimizers import SparseOptimizerSpec
from recforge.protos import pipeline_pb2

logger = logging.getLogger(__name__)

#: set to 1 to train even when the estimate says the job does not fit
SKIP_ENV = "RECFORGE_SKIP_MEMORY_CHECK"

_GIB = 1024**3
#: fraction of the estimate added for allocator slack, batches and temporaries
MARGIN_FRACTION = 0.1
#: fixed bytes added for the interpreter, torch and the data pipeline
MARGIN_BYTES = 256 * 1024**2
_FP32 = 4

# optimizer state per table, in fp32 slots: (full-size slots, per-row slots). fbgemm keeps
# its optimizer state in fp32 whatever the weights' dtype; the torch fallbacks keep theirs in
# the weights' dtype, which is fp32 for every table off the fused kernel on a CPU.
_STATE_SLOTS: dict[str, tuple[int, int]] = {
    "sgd_optimizer": (0, 0),
    "adagrad_optimizer": (1, 0),
    "rowwise_adagrad_optimizer": (0, 1),
    "adam_optimizer": (2, 0),
    "lamb_optimizer": (2, 0),
    "partial_rowwise_adam_optimizer": (1, 1),
    "partial_rowwise_lamb_optimizer": (1, 1),
    "lars_sgd_optimizer": (1, 0),
    "adadelta_optimizer": (2, 0),
    "rmsprop_optimizer": (1, 0),
}


@dataclass(frozen=True)
class TableMemory:
    """The memory one embedding table takes while training.

    Attributes:
        name: the table's name.
        rows: its number of rows.
        dim: its width.
        weight_bytes: bytes per weight element (4 for FP32, 2 for FP16).
        optimizer: the sparse optimizer's oneof name, or "" for a frozen table.
        fused: trained by fbgemm's fused kernel (sharded, no dense gradient), else by a
            data-parallel dense kernel (replicated on every local rank, dense gradient).
        file_backed: weights and optimizer state live in memory-mapped files
            (``train_config.embedding_file_dir``): they take disk, not RAM.

    """

    name: str
    rows: int
    dim: int
    weight_bytes: int
    optimizer: str
    fused: bool
    file_backed: bool = False

    @property
    def weights(self) -> int:
        """Bytes of the weights."""
        return self.rows * self.dim * self.weight_bytes

    @property
    def state(self) -> int:
        """Bytes of the optimizer state."""
        full, per_row = _STATE_SLOTS.get(self.optimizer, (0, 0))
        return (full * self.rows * self.dim + per_row * self.rows) * _FP32

    @property
    def gradient(self) -> int:
        """Bytes of the dense gradient (tables off the fused kernel only)."""
        return 0 if self.fused or not self.optimizer else self.weights

    @property
    def total(self) -> int:
        """Bytes of weights, optimizer state and gradient."""
        return self.weights + self.state + self.gradient


@dataclass(frozen=True)
class MemoryEstimate:
    """The memory a training job needs on one host.

    Attributes:
        tables: every embedding table.
        dense_bytes: dense parameters with their gradients and optimizer state, per rank.
        hosts: hosts of the job (``WORLD_SIZE / LOCAL_WORLD_SIZE``): fused tables are
            sharded over them.
        local_ranks: ranks on this host: each holds its own replica of the dense part.
        can_file_back: ``embedding_file_dir`` could move the fused tables to disk (on a CPU).

    """

    tables: tuple[TableMemory, ...]
    dense_bytes: int
    hosts: int = 1
    local_ranks: int = 1
    can_file_back: bool = False

    @property
    def table_bytes(self) -> int:
        """Bytes of every table (weights, state, gradients), counted once."""
        return sum(t.total for t in self.tables)

    @property
    def needed(self) -> int:
        """Bytes this host needs, margin included.

        Fused tables are split over the hosts table by table, so a host holds at least the
        biggest one; dense-kernel tables and the dense parameters are replicated per rank.
        """
        fused = [t.total for t in self.tables if t.fused and not t.file_backed]
        sharded = max(-(-sum(fused) // self.hosts), max(fused, default=0))
        replicated = sum(t.total for t in self.tables if not t.fused) + self.dense_bytes
        base = sharded + replicated * self.local_ranks
        return int(base * (1 + MARGIN_FRACTION)) + MARGIN_BYTES

    @property
    def disk_bytes(self) -> int:
        """Bytes of the file-backed tables on this host (sharded over the hosts like RAM)."""
        files = [t.total for t in self.tables if t.file_backed]
        return max(-(-sum(files) // self.hosts), max(files, default=0))

    def with_tables(self, **changes: object) -> MemoryEstimate:
        """The same job with every trainable table changed (``weight_bytes``, ``optimizer``)."""
        tables = tuple(replace(t, **changes) if t.optimizer else t for t in self.tables)  # type: ignore[arg-type]
        return replace(self, tables=tables)


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / _GIB:.1f} GiB"


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int:
    """Bytes this process may still allocate on this host (0 when unknown).

    The smaller of the kernel's ``MemAvailable`` and the room left under this container's
    cgroup limit (v2 ``memory.max``, or v1 ``memory.limit_in_bytes``).
    """
    candidates = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        limit = _read_int(limit_file)
        if limit is not None and limit < 1 << 60:  # v1 reports "no limit" as a huge number
            candidates.append(max(limit - (_read_int(usage_file) or 0), 0))
            break
    return min(candidates) if candidates else 0


def _tables(module: nn.Module) -> dict[str, tuple[int, int, int, list[nn.Parameter]]]:
    """``{table: (rows, dim, bytes per element, parameters)}`` of every embedding table."""
    from torchrec.modules.embedding_modules import (
        EmbeddingBagCollectionInterface,
        EmbeddingCollectionInterface,
    )

    out: dict[str, tuple[int, int, int, list[nn.Parameter]]] = {}
    for sub in module.modules():
        if isinstance(sub, EmbeddingBagCollectionInterface):
            configs = sub.embedding_bag_configs()
        elif isinstance(sub, EmbeddingCollectionInterface):
            configs = sub.embedding_configs()
        else:
            continue
        for config, param in zip(configs, sub.parameters()):
            entry = out.setdefault(
                config.name,
                (config.num_embeddings, config.embedding_dim, param.element_size(), []),
            )
            entry[3].append(param)
    return out


def estimate_training_memory(
    module: nn.Module,
    spec: SparseOptimizerSpec,
    device: torch.device,
    frozen_params: Iterable[nn.Parameter] = (),
    dense_kernel_tables: Iterable[str] = (),
    file_backed: bool = False,
) -> MemoryEstimate:
    """Estimates the memory training ``module`` takes; allocates nothing.

    Args:
        module: the model with its tables on the meta device (dense parameters may be real).
        spec: the sparse optimizer.
        device: this rank's device (decides which tables fbgemm's fused kernel trains, as
            :func:`recforge.utils.sharding.shard_model` does).
        frozen_params: embedding weights that do not train.
        dense_kernel_tables: tables the user put on the dense kernel.
        file_backed: tables on the fused CPU kernel live in memory-mapped files
            (``train_config.embedding_file_dir``, see :mod:`recforge.utils.embedding_files`).

    """
    frozen_ids = {id(p) for p in frozen_params}
    forced_dense = set(dense_kernel_tables)
    found = _tables(module)
    table_ids = {id(p) for _, _, _, params in found.values() for p in params}
    tables = []
    for name, (rows, dim, width, params) in found.items():
        frozen = any(id(p) in frozen_ids for p in params)
        tables.append(
            TableMemory(
                name=name,
                rows=rows,
                dim=dim,
                weight_bytes=width,
                optimizer="" if frozen else spec.name,
                fused=spec.fused_on(device.type, dim) and name not in forced_dense,
            )
        )
    if file_backed and device.type == "cpu":
        tables = [replace(t, file_backed=t.fused) for t in tables]
    dense = sum(p.numel() * p.element_size() for p in module.parameters() if id(p) not in table_ids)
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world)) or 1
    # weights, gradient and up to two optimizer slots (Adam) for each dense parameter
    return MemoryEstimate(
        tuple(tables),
        dense * 4 + _zch_bytes(module),
        max(world // local, 1),
        local,
        device.type == "cpu",
    )


def _zch_bytes(module: nn.Module) -> int:
    """Bytes of the zch remappers' state: a few int64 per row of a zch table, on every rank.

    The table itself is counted at ``zch_size`` rows like any other table.
    """
    from recforge.modules.zch import ZchRemapper

    return sum(
        b.numel() * b.element_size()
        for sub in module.modules()
        if isinstance(sub, ZchRemapper)
        for b in sub.buffers()
    )


def _fits(estimate: MemoryEstimate, available: int) -> list[str]:
    """The settings (as config text) under which ``estimate`` would fit in ``available``."""
    options = [
        ("data_type: FP16 on the embedding features", estimate.with_tables(weight_bytes=2)),
        (
            "sparse_optimizer { rowwise_adagrad_optimizer {...} }",
            estimate.with_tables(optimizer="rowwise_adagrad_optimizer"),
        ),
        (
            "data_type: FP16 with rowwise_adagrad_optimizer",
            estimate.with_tables(weight_bytes=2, optimizer="rowwise_adagrad_optimizer"),
        ),
    ]
    fitting = [f"{text} ({_gib(e.needed)})" for text, e in options if e.needed <= available]
    if len(fitting) == 3:  # either change alone fits: the combination is no news
        fitting = fitting[:2]
    on_disk = replace(
        estimate, tables=tuple(replace(t, file_backed=t.fused) for t in estimate.tables)
    )
    if estimate.can_file_back and not any(t.file_backed for t in estimate.tables):
        if on_disk.needed <= available:
            fitting.append(
                f'train_config {{ embedding_file_dir: "..." }} (file-backed tables:'
                f" {_gib(on_disk.needed)} of RAM + {_gib(on_disk.disk_bytes)} of disk)"
            )
    return fitting


def check_training_memory(
    estimate: MemoryEstimate,
    available: Optional[int] = None,
    config: Optional[pipeline_pb2.EasyRecConfig] = None,
    disk_available: Optional[int] = None,
) -> None:
    """Stops a job whose estimate exceeds the memory this host has left.

    Args:
        estimate: see :func:`estimate_training_memory`.
        available: bytes available (default: :func:`available_memory`; 0 skips the check).
        config: the pipeline config, to name the biggest table's size field.
        disk_available: free bytes where file-backed tables go (None: not checked).

    Raises:
        ConfigError: the job needs more memory than the host has; the message names the
            total, the biggest tables, what the host has and settings that would fit. Or
            the file-backed tables need more disk than ``embedding_file_dir`` has.

    """
    if os.environ.get(SKIP_ENV) == "1":
        return
    disk = estimate.disk_bytes
    if disk and disk_available is not None and disk > disk_available:
        raise ConfigError(
            f"the file-backed embedding tables need about {_gib(disk)} of disk, the"
            f" directory has {_gib(disk_available)} free; choose a directory with more room"
            f" (set {SKIP_ENV}=1 to try anyway)",
            field="train_config.embedding_file_dir",
        )
    if available is None:
        available = available_memory()
    needed = estimate.needed
    if not available or needed <= available:
        logger.debug("training needs about %s of %s available", _gib(needed), _gib(available))
        return
    biggest = sorted(estimate.tables, key=lambda t: -t.total)[:3]
    parts = ", ".join(
        f"'{t.name}' {_gib(t.total)} ({t.rows} rows x {t.dim} x {t.weight_bytes} B"
        f"{' + ' + t.optimizer + ' state' if t.state else ''})"
        for t in biggest
    )
    weights = sum(t.weights for t in estimate.tables)
    state = sum(t.state + t.gradient for t in estimate.tables)
    fitting = _fits(estimate, available)
    if fitting:
        advice = "would fit with " + " or ".join(fitting)
    else:
        tables = estimate.table_bytes
        other = needed - tables
        room = max(available - other, 0)
        advice = (
            "no data_type / optimizer setting fits: shrink hash_bucket_size / num_buckets"
            f" to about {room / max(tables, 1):.0%} or use a machine with more memory"
        )
    raise ConfigError(
        f"training needs about {_gib(needed)} of memory ({len(estimate.tables)} embedding"
        f" tables: {_gib(weights)} weights + {_gib(state)} optimizer state and gradients;"
        f" biggest {parts}), this machine has"
        f" {_gib(available)} available; {advice} (set {SKIP_ENV}=1 to try anyway)",
        field=_size_field(config, biggest[0].name) if config and biggest else "feature_configs",
    )


def _size_field(config: pipeline_pb2.EasyRecConfig, table: str) -> str:
    """The field path setting ``table``'s rows, or ``feature_configs`` when not found."""
    from recforge.config.value_checks import _feature_messages

    found: list[tuple[int, str, Any]] = []
    for fld, feature in _feature_messages(config):
        name = getattr(feature, "embedding_name", "") or f"{feature.feature_name}_emb"
        # the table itself, or a WIDE / suffixed copy of it (<name>_wide, <name>_<suffix>)
        if name == table or table.startswith(name + "_"):
            found.append((len(name), fld, feature))
    if found:
        _, fld, feature = max(found, key=lambda entry: entry[0])
        fields = feature.DESCRIPTOR.fields_by_name
        for size in ("hash_bucket_size", "num_buckets", "zch"):
            if size in fields and feature.HasField(size):
                return f"{fld}.{size}.zch_size" if size == "zch" else f"{fld}.{size}"
        return fld
    return "feature_configs"
