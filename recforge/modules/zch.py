"""Zero-collision hashing (TorchEasyRec's ``zch``): unbounded raw ids -> ``zch_size`` rows.

A feature with ``zch { zch_size ... }`` keeps its ids as 63-bit hashes (no
``hash_bucket_size``); :class:`ZchRemapper` maps them to table rows with torchrec's
:class:`~torchrec.modules.mc_modules.MCHManagedCollisionModule`: while training it counts the
ids it sees and, every ``eviction_interval`` steps, admits the new ones into free rows or in
place of the ids its eviction policy (``lfu`` / ``lru`` / ``distance_lfu``) scores lowest.
An id without a row (not admitted yet, or evicted) reads the table's last row, which no id
ever owns (torchrec reserves it), so ``zch_size - 1`` ids hold rows of their own.

Where recforge differs from TorchEasyRec (which wraps the tables in torchrec's sharded
``ManagedCollisionEmbeddingBagCollection``, each rank owning a slice of the rows): the
remapper is replicated on every rank and, when training on several ranks, is fed the ids of
every rank's batch (gathered) in rank order, so all replicas make the same admissions and
evictions and the table behind it is sharded (or falls back to the dense kernel) like any
other table; checkpoints then hold one copy of the remapper's state and resume on any number
of ranks. An evicted row keeps its trained weights for the id admitted into it (torchrec's
unsharded managed-collision modules do the same; its sharded ones re-initialise the row).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from functools import partial
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn
from torchrec.modules.mc_modules import (
    DistanceLFU_EvictionPolicy,
    LFU_EvictionPolicy,
    LRU_EvictionPolicy,
    MCHEvictionPolicy,
    MCHManagedCollisionModule,
    average_threshold_filter,
    dynamic_threshold_filter,
    probabilistic_threshold_filter,
)
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from recforge.protos import feature_pb2

#: ids of a zch feature are its values' FG hash modulo this (TorchEasyRec's
#: ``MAX_HASH_BUCKET_SIZE``), so the empty-slot marker ``int64 max`` is never an id
ZCH_HASH_SIZE = 2**63 - 1

ThresholdFilter = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]

# the names a threshold_filtering_func may use (TorchEasyRec evaluates the string with these)
_FILTER_NAMES: dict[str, Any] = {
    "partial": partial,
    "average_threshold_filter": average_threshold_filter,
    "dynamic_threshold_filter": dynamic_threshold_filter,
    "probabilistic_threshold_filter": probabilistic_threshold_filter,
}
# tensor methods / torch functions a filter may call: arithmetic and reductions only
_SAFE_CALLS = frozenset(
    "float double long int sum mean max min median numel clamp abs sqrt log exp"
    " quantile topk ones_like zeros_like full_like rand_like where pow".split()
)
_SAFE_NODES = (
    ast.Expression,
    ast.Lambda,
    ast.arguments,
    ast.arg,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Tuple,
    ast.Compare,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Call,
    ast.keyword,
    ast.Attribute,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
    ast.boolop,
)


def parse_threshold_filter(text: str) -> ThresholdFilter:
    """Compiles a ``threshold_filtering_func`` string into the function it names.

    TorchEasyRec ``eval``-s the string with ``torch``, ``nn``, ``partial`` and torchrec's three
    filters in scope. recforge evaluates it only after checking that it is an expression over
    numbers, the lambda's arguments, those three filters, ``partial`` and arithmetic /
    reduction calls on tensors (``torch.<fn>`` or ``x.<fn>`` for a short list of functions),
    so a config cannot run arbitrary code; anything else (``nn``, imports, attributes with
    underscores, other names) is refused.

    Args:
        text: e.g. ``"lambda x: (x > 10, 10)"`` or
            ``"lambda x: dynamic_threshold_filter(x, 1.0)"``.

    Returns:
        A function of the id counts ``int64 [U]`` -> ``(mask bool [U], threshold)``.

    Raises:
        ValueError: the string is not such an expression (the message says why).

    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not a Python expression ({e.msg})") from None
    lambdas = [node for node in ast.walk(tree) if isinstance(node, ast.Lambda)]
    params = {a.arg for node in lambdas for a in node.args.args}
    for node in ast.walk(tree):
        if not isinstance(node, _SAFE_NODES):
            raise ValueError(f"{type(node).__name__} is not allowed in a threshold filter")
        if isinstance(node, ast.Name) and node.id not in params and node.id not in _FILTER_NAMES:
            if node.id != "torch":
                raise ValueError(f"unknown name {node.id!r}")
        if isinstance(node, ast.Attribute) and node.attr not in _SAFE_CALLS:
            raise ValueError(f"attribute {node.attr!r} is not allowed")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, bool)):
            raise ValueError(f"constant {node.value!r} is not allowed (numbers only)")
    scope = {"__builtins__": {}, "torch": torch, **_FILTER_NAMES}
    func = eval(compile(tree, "<threshold_filtering_func>", "eval"), scope)  # noqa: S307
    if not callable(func):
        raise ValueError("the expression is not a function")
    return func


def eviction_policy(config: feature_pb2.ZeroCollisionHash) -> MCHEvictionPolicy:
    """The torchrec eviction policy for a ``zch`` config (checked by the feature first).

    Raises:
        ValueError: no policy set, or a bad ``threshold_filtering_func``.

    """
    threshold = None
    if config.HasField("threshold_filtering_func"):
        threshold = parse_threshold_filter(config.threshold_filtering_func)
    kind = config.WhichOneof("eviction_policy")
    if kind == "lfu":
        return LFU_EvictionPolicy(threshold_filtering_func=threshold)
    if kind == "lru":
        return LRU_EvictionPolicy(
            decay_exponent=config.lru.decay_exponent, threshold_filtering_func=threshold
        )
    if kind == "distance_lfu":
        return DistanceLFU_EvictionPolicy(
            decay_exponent=config.distance_lfu.decay_exponent, threshold_filtering_func=threshold
        )
    raise ValueError("expected an eviction policy (lfu, lru or distance_lfu), found none")


def remap_ids(ids: torch.Tensor, sorted_raw_ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Table rows of raw ids: the row an admitted id owns, else the last row.

    The lookup torchrec's ``MCHManagedCollisionModule.remap`` does, written without masked
    assignment so that it traces with ``torch.fx`` and compiles with TorchScript.

    Args:
        ids: raw ids ``int64 [N]``.
        sorted_raw_ids: admitted ids in ascending order, empty slots ``int64 max`` ``[Z]``.
        rows: the row of each of them ``[Z]``.

    Returns:
        ``int64 [N]`` in ``[0, Z)``.

    """
    position = torch.searchsorted(sorted_raw_ids[:-1], ids)
    found = sorted_raw_ids[position] == ids
    miss = torch.full_like(ids, rows.numel() - 1)
    return torch.where(found, rows[position], miss)


class ZchRemapper(nn.Module):
    """The remapper of one zch table, shared by the features that look the table up.

    Its state (torchrec's buffers: the admitted ids, their rows, the policy's counts / last
    access steps, the step counter) is in ``state_dict``; the ids seen since the last
    eviction round and that round's step ride along as extra state, so a resumed run admits
    and evicts exactly as an uninterrupted one.

    Args:
        config: the features' ``zch`` message.
        device: where the buffers live (never ``meta``: they are not sharded).

    """

    def __init__(self, config: feature_pb2.ZeroCollisionHash, device: torch.device) -> None:
        super().__init__()
        self.zch_size = int(config.zch_size)
        self.mc = MCHManagedCollisionModule(
            zch_size=self.zch_size,
            device=device,
            eviction_policy=eviction_policy(config),
            eviction_interval=int(config.eviction_interval),
            input_hash_size=ZCH_HASH_SIZE,
        )

    def forward(self, ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """Counts the ids (training) and maps them to rows.

        Args:
            ids: the raw ids ``int64 [N_i]`` of each feature using the table.

        Returns:
            Their rows ``int64 [N_i]`` in ``[0, zch_size)``.

        """
        if self.training:
            self.profile(torch.cat(ids) if len(ids) > 1 else ids[0])
        sorted_ids, rows = self.mc._mch_sorted_raw_ids, self.mc._mch_remapped_ids_mapping
        return [remap_ids(v, sorted_ids, rows) for v in ids]

    @torch.no_grad()
    def profile(self, ids: torch.Tensor) -> None:
        """Counts a training batch's ids; every ``eviction_interval`` calls, admits / evicts.

        On several ranks this is collective: every rank's ids are counted, in rank order.

        Args:
            ids: raw ids ``int64 [N]`` of this rank's batch.

        """
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ids = _gather_ids(ids)
        lengths = torch.tensor([ids.numel()], dtype=torch.int64, device=ids.device)
        features = {"ids": JaggedTensor(values=ids, lengths=lengths)}
        if self.mc._eviction_policy._threshold_filtering_func is None:
            self.mc.profile(features)
        else:
            # a filter may draw random numbers (probabilistic_threshold_filter): seed them by
            # the step so that every rank's replica admits the same ids, a resumed run too
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(self.mc._current_iter_tensor.item()))
                self.mc.profile(features)
        # torchrec collects the evicted rows until evict() hands them over (to reset them);
        # evicted rows keep their weights here (see the module docstring): drop the list
        self.mc.evict()

    def get_extra_state(self) -> str:
        """The bookkeeping torchrec keeps outside its buffers, as JSON (see the class docstring).

        A string, not tensors: checkpoints (DCP) restore a string whole, whereas a tensor
        would have to match the shape the fresh module has, and the pending history grows.
        """
        mc = self.mc
        offset = mc._current_history_buffer_offset if mc._input_history_buffer_size > 0 else 0
        state: dict[str, Any] = {
            "current_iter": int(mc._current_iter_tensor.item()),
            "last_eviction_iter": mc._last_eviction_iter if mc._current_iter >= 0 else -1,
            "history_size": mc._input_history_buffer_size,
            "history": mc._history_accumulator[:offset].tolist() if offset else [],
            "metadata": {
                name: buffer[:offset].tolist() for name, buffer in mc._history_metadata.items()
            },
        }
        return json.dumps(state)

    def set_extra_state(self, state: Any) -> None:
        """Restores :meth:`get_extra_state`'s bookkeeping into torchrec's module."""
        saved = json.loads(state)
        mc = self.mc
        if int(saved["last_eviction_iter"]) < 0:
            mc._current_iter = -1  # never trained: torchrec starts from its step counter
            return
        mc._current_iter = int(saved["current_iter"])
        mc._last_eviction_iter = int(saved["last_eviction_iter"])
        size = int(saved["history_size"])
        if size <= 0:
            mc._input_history_buffer_size = -1
            return
        # torchrec sizes these buffers from the first batch it sees: give them the saved size
        mc._input_history_buffer_size = size
        mc._history_accumulator = torch.zeros(size, dtype=torch.int64, device=mc.device)
        for info in mc._eviction_policy.metadata_info:
            if info.is_history_metadata:
                buffer = torch.zeros(size, dtype=torch.int64, device=mc.device)
                mc.register_buffer(f"_history_{info.metadata_name}", buffer, persistent=False)
                mc._history_metadata[info.metadata_name] = buffer
        history = torch.tensor(saved["history"], dtype=torch.int64)
        offset = history.numel()
        mc._history_accumulator[:offset] = history.to(mc.device)
        for name, values in saved["metadata"].items():
            mc._history_metadata[name][:offset] = torch.tensor(values, dtype=torch.int64)
        mc._current_history_buffer_offset = offset


def remap_kjt(
    features: KeyedJaggedTensor,
    names: list[list[str]],
    sorted_raw_ids: list[torch.Tensor],
    rows: list[torch.Tensor],
) -> KeyedJaggedTensor:
    """``features`` with the ids of ``names[t]`` mapped to rows by table ``t``'s state.

    A plain function (``torch.fx.wrap``-ed where it is called) so that an export keeps it
    as one call, compiled by TorchScript with the tables' buffers as arguments.

    Args:
        features: every sparse feature.
        names: per zch table, the features that look it up.
        sorted_raw_ids: per table, its admitted ids ascending (``int64 [Z_t]``).
        rows: per table, the row of each of them (``int64 [Z_t]``).

    """
    keys = features.keys()
    segments = list(torch.split(features.values(), features.length_per_key()))
    for t in range(len(names)):
        for name in names[t]:
            i = keys.index(name)
            segments[i] = remap_ids(segments[i], sorted_raw_ids[t], rows[t])
    return KeyedJaggedTensor(
        keys=keys,
        values=torch.cat(segments),
        lengths=features.lengths(),
        weights=features.weights_or_none(),
        stride=features.stride(),
    )


def _gather_ids(ids: torch.Tensor) -> torch.Tensor:
    """Every rank's ids, concatenated in rank order (collective; sizes may differ)."""
    world = dist.get_world_size()
    size = torch.tensor([ids.numel()], dtype=torch.int64, device=ids.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s.item()) for s in sizes))
    padded = torch.zeros(longest, dtype=ids.dtype, device=ids.device)
    padded[: ids.numel()] = ids
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n.item())] for part, n in zip(parts, sizes)])


def zch_config_of(feature: Any) -> Optional[feature_pb2.ZeroCollisionHash]:
    """A feature's ``zch`` message when its ids go through a zch remapper, else None."""
    config = getattr(feature, "zch_config", None)
    return config if isinstance(config, feature_pb2.ZeroCollisionHash) else None
