"""Wrap a model in torchrec's DistributedModelParallel with the optimizers the config asks for.

Per embedding table the kernel is chosen by what fbgemm supports on the device: the fused
kernel (optimizer applied inside backward, table-wise or column-wise sharding) where it can,
else a data-parallel dense kernel whose table is trained by a torch optimizer built from the
same ``sparse_optimizer`` settings. The fallback is logged once per run.

On CPU, unpooled tables (the ``EmbeddingCollection`` of SEQUENCE groups) cannot take the
dense kernel: fbgemm's CPU dense lookup ignores ``PoolingMode.NONE`` and returns pooled rows
``[B, sum(dims)]``, whatever the sharding type, which torchrec then fails to split into jagged
tensors. Such a collection stays unsharded instead (see :func:`_keep_unsharded`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.model_parallel import (
    DataParallelWrapper,
    DefaultDataParallelWrapper,
    DistributedModelParallel,
)
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingEnv
from torchrec.modules.embedding_modules import (
    EmbeddingBagCollectionInterface,
    EmbeddingCollection,
    EmbeddingCollectionInterface,
)
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from recforge.config.errors import ConfigError
from recforge.modules.embedding import table_bases
from recforge.optim import (
    LearningRateSchedule,
    create_dense_optimizer,
    create_schedule,
    fill_initial_accumulator,
    sparse_optimizer_spec,
    split_part_optimizers,
)
from recforge.protos import train_pb2
from recforge.utils import dist as dist_util

logger = logging.getLogger(__name__)


class _SingleProcessDense(DataParallelWrapper):
    """Leaves the dense modules of a one-process job unwrapped.

    DMP's default wraps them in DistributedDataParallel even for one rank, whose backward then
    copies every dense gradient into its buckets and all-reduces them over a group of one.
    State-dict keys are the same either way (DMP strips DDP's prefix), so checkpoints move
    between one process and several.
    """

    def wrap(self, dmp: DistributedModelParallel, env: ShardingEnv, device: torch.device) -> None:
        """Moves the module to ``device``, as the default wrapper does before wrapping."""
        dmp._dmp_wrapped_module = dmp._dmp_wrapped_module.to(device)


# parameter names of tables: "...ebc.embedding_bags.<table>.weight" (pooled) and
# "...sequence_ecs.dim_D.embeddings.<table>.weight" (unpooled, SEQUENCE groups)
_TABLE_PARAM = re.compile(r"(?:embedding_bags|sequence_ecs\.dim_\d+\.embeddings)\.([^.]+)\.")


def _table_of_param(name: str) -> Optional[str]:
    """The table a parameter belongs to, or ``None`` for a dense parameter."""
    match = _TABLE_PARAM.search(name)
    return match.group(1) if match else None


@dataclass
class ShardedTraining:
    """A sharded model with its optimizer and learning-rate schedules.

    Attributes:
        model: the DistributedModelParallel module.
        optimizer: every optimizer (fused tables, fallback tables, dense) as one keyed optimizer.
        schedules: learning-rate schedules to update each step.
        fallback_tables: tables trained by a dense kernel instead of the fused one.

    """

    model: DistributedModelParallel
    optimizer: Optional[CombinedOptimizer]
    schedules: list[LearningRateSchedule] = field(default_factory=list)
    fallback_tables: list[str] = field(default_factory=list)


def _embedding_tables(model: nn.Module) -> dict[str, tuple]:
    """``{table_name: (embedding_dim, parameters)}`` of every embedding table.

    A name used by both a pooled (EBC) and an unpooled (EC) table lists both parameters.
    """
    tables: dict[str, tuple] = {}
    for module in model.modules():
        if isinstance(module, EmbeddingBagCollectionInterface):
            configs = module.embedding_bag_configs()
        elif isinstance(module, EmbeddingCollectionInterface):
            configs = module.embedding_configs()
        else:
            continue
        for config, param in zip(configs, module.parameters()):
            _, params = tables.setdefault(config.name, (config.embedding_dim, []))
            params.append(param)
    return tables


def _keep_unsharded(
    module: nn.Module, device: torch.device, fused_tables: set[str]
) -> dict[str, EmbeddingCollection]:
    """The unpooled collections that must stay plain torchrec modules, by module path.

    torchrec's only non-fused kernel (``dense``, any sharding type) looks unpooled tables up
    with fbgemm's dense table-batched op, whose CPU version pools whatever pooling mode it is
    given; the sharded collection then cannot split its output. An unsharded
    ``EmbeddingCollection`` looks each table up with ``nn.Embedding``: DistributedModelParallel
    leaves it among the dense parameters (replicated, gradients all-reduced: data parallel),
    and the fallback optimizer trains its tables like the pooled fallback tables. A collection
    with any table off the fused kernel stays unsharded as a whole (torchrec shards a module's
    tables together); its other tables then train with the fallback optimizer too.

    Args:
        module: the model, before sharding.
        device: this rank's device.
        fused_tables: names of the tables that may use the fused kernel.

    """
    if device.type != "cpu":
        return {}
    return {
        path: ec
        for path, ec in module.named_modules()
        if type(ec) is EmbeddingCollection
        and any(c.name not in fused_tables for c in ec.embedding_configs())
    }


@torch.no_grad()
def _materialize(ec: EmbeddingCollection, device: torch.device, frozen_tables: set[str]) -> None:
    """Allocates a collection created on the meta device and initialises its tables.

    Sharding would do this for a sharded collection; each table gets its config's ``init_fn``
    (torchrec's default: uniform in ``±sqrt(1 / num_embeddings)``). Frozen tables stop
    requiring gradients, as no optimizer steps them.
    """
    if any(p.is_meta for p in ec.parameters()):
        ec.to_empty(device=device)
        for config in ec.embedding_configs():
            config.init_fn(ec.embeddings[config.name].weight)
    for config in ec.embedding_configs():
        if config.name in frozen_tables:
            ec.embeddings[config.name].weight.requires_grad_(False)


@dataclass(frozen=True)
class UserConstraint:
    """A table's ``embedding_constraints`` (or ``global_embedding_constraints``).

    Attributes:
        where: the field that set it, for messages.
        sharding_types: the sharding types allowed (empty: any).
        kernels: the compute kernels allowed (empty: any).

    """

    where: str
    sharding_types: tuple[str, ...]
    kernels: tuple[str, ...]

    def narrow(self, table: str, kernel: str, possible: list[str]) -> list[str]:
        """The sharding types of ``possible`` the user allows for ``table`` on ``kernel``.

        Raises:
            ConfigError: the user's choice leaves nothing recforge can run.

        """
        if self.kernels and kernel not in self.kernels:
            raise ConfigError(
                f"table '{table}' can only use the {kernel!r} compute kernel here;"
                f" found compute_kernels {list(self.kernels)}",
                field=f"{self.where}.compute_kernels",
            )
        if not self.sharding_types:
            return possible
        chosen = [t for t in possible if t in self.sharding_types]
        if not chosen:
            raise ConfigError(
                f"table '{table}' ({kernel} kernel) can be sharded {possible} here;"
                f" found sharding_types {list(self.sharding_types)}",
                field=f"{self.where}.sharding_types",
            )
        return chosen


def user_table_constraints(
    features: list, train_config: train_pb2.TrainConfig
) -> dict[str, UserConstraint]:
    """Table name -> the user's sharding constraints, as TorchEasyRec reads them.

    A feature's ``embedding_constraints`` apply to its table; tables of features without them
    take ``train_config.global_embedding_constraints`` when it is set.

    Args:
        features: the ``BaseFeature`` objects of the config.
        train_config: the training config.

    """
    has_global = train_config.HasField("global_embedding_constraints")
    out: dict[str, UserConstraint] = {}
    for feature in features:
        cfg = feature.config
        if not feature.is_sparse or not hasattr(cfg, "embedding_constraints"):
            continue
        if cfg.HasField("embedding_constraints"):
            where, constraint = (
                f"feature {feature.name!r} embedding_constraints",
                cfg.embedding_constraints,
            )
        elif has_global:
            where = "train_config.global_embedding_constraints"
            constraint = train_config.global_embedding_constraints
        else:
            continue
        out.setdefault(
            feature.embedding_name,
            UserConstraint(
                where, tuple(constraint.sharding_types), tuple(constraint.compute_kernels)
            ),
        )
    return out


def shard_model(
    module: nn.Module,
    device: torch.device,
    train_config: Optional[train_pb2.TrainConfig] = None,
    frozen_params: Optional[list[nn.Parameter]] = None,
    table_constraints: Optional[dict[str, UserConstraint]] = None,
) -> ShardedTraining:
    """Plans and applies embedding sharding; builds optimizers when training.

    Args:
        module: the model (usually a ``TrainWrapper``); tables may live on the meta device.
        device: this rank's device.
        train_config: the training config (None for evaluation / prediction).
        frozen_params: embedding weights that must not train (``trainable: false``).
        table_constraints: the user's sharding constraints per table (see
            :func:`user_table_constraints`); they narrow what recforge would choose.

    Returns:
        The sharded model, its optimizer and schedules.

    """
    frozen_ids = {id(p) for p in frozen_params or []}
    tables = _embedding_tables(module)
    bases = table_bases(module)
    # the user's constraints name embedding_names; a WIDE or suffixed copy of a table follows
    # its feature's constraints, as in TorchEasyRec (per feature, whatever its group)
    table_constraints = {
        name: table_constraints[bases.get(name, name)]
        for name in tables
        if table_constraints and bases.get(name, name) in table_constraints
    }
    constraints: dict[str, ParameterConstraints] = {}
    fallback: list[str] = []
    spec = sparse_optimizer_spec(train_config.sparse_optimizer) if train_config else None
    frozen_tables = {
        name for name, (_, params) in tables.items() if any(id(p) in frozen_ids for p in params)
    }
    fused_tables: set[str] = set()
    for name, (dim, _) in tables.items():
        frozen = name in frozen_tables
        use_fused = spec is not None and not frozen and spec.fused_on(device.type, dim)
        user = table_constraints.get(name)
        if use_fused and user is not None and user.kernels and "fused" not in user.kernels:
            use_fused = False  # the user asked for the dense kernel
        if use_fused:
            fused_tables.add(name)
    unsharded = _keep_unsharded(module, device, fused_tables)
    unsharded_ids = {id(p) for ec in unsharded.values() for p in ec.parameters()}
    unsharded_tables = {c.name for ec in unsharded.values() for c in ec.embedding_configs()}
    fused_params: list[torch.nn.Parameter] = []
    riders: list[str] = []  # fused-capable tables in an unsharded collection
    for name, (_, params) in tables.items():
        use_fused = name in fused_tables
        user = table_constraints.get(name)
        kernel = "fused" if use_fused else "dense"
        if use_fused:
            fused_params.extend(p for p in params if id(p) not in unsharded_ids)
            if spec is not None and name in unsharded_tables:
                fallback.append(name)
                riders.append(name)
            sharding_types = ["table_wise", "column_wise"]
            if device.type == "cuda":
                sharding_types += ["row_wise", "table_row_wise"]
            if dist_util.world_size() == 1 and (user is None or not user.sharding_types):
                # one rank holds every table whole; the planner still chose column_wise
                # (one shard per table) in some runs, whose input dist costs more per step
                sharding_types = ["table_wise"]
        else:
            if spec is not None and name not in frozen_tables:
                fallback.append(name)
            sharding_types = ["data_parallel"]
        if user is not None:
            sharding_types = user.narrow(name, kernel, sharding_types)
        constraints[name] = ParameterConstraints(
            sharding_types=sharding_types, compute_kernels=[kernel]
        )
    cannot = [t for t in fallback if t not in riders]
    if cannot and dist_util.rank() == 0:
        assert spec is not None  # tables fall back only from a sparse optimizer
        reason = spec.cpu_note if device.type == "cpu" and spec.cpu_note else ""
        logger.warning(
            "fbgemm's fused %s kernel cannot train tables %s (%s, dims %s%s): they use a"
            " data-parallel dense lookup with %s.%s instead",
            device.type,
            cannot,
            spec.name,
            sorted({tables[t][0] for t in cannot}),
            f"; {reason}" if reason else "",
            spec.fallback_class.__module__,
            spec.fallback_class.__name__,
        )
    if riders and dist_util.rank() == 0:
        assert spec is not None
        logger.warning(
            "the unpooled tables %s train with %s.%s, not fbgemm's fused kernel: their"
            " EmbeddingCollection also holds a frozen or dense-kernel table, so it stays"
            " unsharded",
            riders,
            spec.fallback_class.__module__,
            spec.fallback_class.__name__,
        )
    if fused_params:
        assert spec is not None  # fused tables need a sparse optimizer
        # torchrec consumes the kwargs dict it is given: pass a copy
        apply_optimizer_in_backward(spec.fused_class, fused_params, dict(spec.fused_kwargs))
    for ec in unsharded.values():
        _materialize(ec, device, frozen_tables)

    world = dist_util.world_size()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    topology = Topology(world_size=world, compute_device=device.type, local_world_size=local_world)
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    plan = planner.collective_plan(module, None, dist.GroupMember.WORLD)
    for path in unsharded:
        plan.plan.pop(path, None)
    wrapper = DefaultDataParallelWrapper() if world > 1 else _SingleProcessDense()
    model = DistributedModelParallel(
        module, device=device, plan=plan, data_parallel_wrapper=wrapper
    )
    if train_config is None:
        return ShardedTraining(model, None)
    assert spec is not None  # made from train_config

    table_params: dict[str, torch.nn.Parameter] = {}
    dense_params: dict[str, torch.nn.Parameter] = {}
    for name, param in in_backward_optimizer_filter(model.named_parameters()):
        table = _table_of_param(name)
        if table in frozen_tables:
            continue  # no optimizer: the table keeps its initial (or restored) weights
        (dense_params if table is None else table_params)[name] = param
    fused_optimizer = model.fused_optimizer
    if fused_params and spec.initial_accumulator_value:
        fill_initial_accumulator(fused_optimizer, spec.initial_accumulator_value)
    optimizers = [("sparse", fused_optimizer)]
    sparse_field = "train_config.sparse_optimizer"
    # fused kernels update tables inside backward and read the rate from param_groups only in
    # step()/zero_grad() (a no-op otherwise): push a new rate before the step's backward
    schedules = [
        create_schedule(
            fused_optimizer,
            train_config.sparse_optimizer,
            spec.lr,
            on_update=fused_optimizer.step,
            field_path=sparse_field,
        )
    ]
    if table_params:
        fallback_optimizer = KeyedOptimizerWrapper(table_params, spec.create)
        optimizers.append(("sparse_fallback", fallback_optimizer))
        schedules.append(
            create_schedule(
                fallback_optimizer, train_config.sparse_optimizer, spec.lr, field_path=sparse_field
            )
        )
    dense_config = train_config.dense_optimizer
    dense_field = "train_config.dense_optimizer"
    dense_params, parts = split_part_optimizers(dense_config, dense_params, dense_field)
    if dense_params or not parts:
        dense_optimizer = KeyedOptimizerWrapper(
            dense_params, lambda ps: create_dense_optimizer(dense_config, ps, dense_field)
        )
        optimizers.append(("dense", dense_optimizer))
        dense_lr = dense_optimizer.param_groups[0]["lr"] if dense_optimizer.param_groups else 0.0
        schedules.append(
            create_schedule(dense_optimizer, dense_config, dense_lr, field_path=dense_field)
        )
    for part in parts:
        part_optimizer = KeyedOptimizerWrapper(
            part.params,
            lambda ps, part=part: create_dense_optimizer(part.config, ps, part.field),
        )
        optimizers.append((f"dense_part{part.index}", part_optimizer))
        # a part without its own learning_rate follows the dense optimizer's kind of schedule
        own_schedule = part.config.WhichOneof("learning_rate") is not None
        schedules.append(
            create_schedule(
                part_optimizer,
                part.config if own_schedule else dense_config,
                part_optimizer.param_groups[0]["lr"],
                field_path=part.field if own_schedule else dense_field,
            )
        )
    return ShardedTraining(model, CombinedOptimizer(optimizers), schedules, fallback)
