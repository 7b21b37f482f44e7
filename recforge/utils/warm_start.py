"""Warm start (``fine_tune_checkpoint``): restore what fits from another run's checkpoint.

Unlike resuming (``--continue_train``), which restores everything and fails on any
difference, a warm start restores each tensor of the model whose name (after the optional
``fine_tune_ckpt_param_map``) is in the checkpoint with the same shape, keeps the initial
values of the others and names them in a warning: after adding a feature, its new table and
the layers whose input grew start fresh, everything else continues. Optimizer state is
restored the same way (per parameter and state, e.g. Adam's ``exp_avg``) unless
``--ignore_restore_optimizer``; the optimizers' hyper-parameters always come from the config.
Training starts at step 0 (TorchEasyRec does the same).

``fine_tune_ckpt_param_map`` is a text file with one ``<name in this model> <name in the
checkpoint>`` pair per line (separated by whitespace, e.g. a tab); empty lines and lines
starting with ``#`` are skipped. Names are model state-dict keys such as
``model.embedding_group.ebc.embedding_bags.user_emb.weight`` (the warning of a warm start
lists the names it could not restore, and the checkpoint's unused ones).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from recforge.config import ConfigError
from recforge.errors import CheckpointError
from recforge.utils import dist as dist_util
from recforge.utils import layout
from recforge.utils.checkpoint_format import CheckpointFiles
from recforge.utils.dense_ema import EMA_ATTRIBUTE, DenseEMA, ema_key, param_name
from recforge.utils.id_hash import check_id_hash

logger = logging.getLogger(__name__)

_MODEL = "model."  # top-level key of the model's state in a checkpoint
_WRAPPED = "model."  # TrainWrapper.model: the prefix of the model's own parameters
_OPTIMIZER_STATE = "optimizer.state."
_EMA_PREFIX = f"{EMA_ATTRIBUTE}."


@dataclass
class WarmStartResult:
    """What a warm start restored.

    Attributes:
        checkpoint: the checkpoint directory read.
        restored: model keys restored (this model's names).
        missing: model keys not in the checkpoint (initial values kept).
        mismatched: ``{key: (checkpoint shape, model shape)}`` of keys kept for their shape.
        unused: checkpoint model keys nothing was restored from.
        optimizer_restored: optimizer states restored (``<optimizer>.<param>.<state>``).
        optimizer_fresh: optimizer states left as initialised.

    """

    checkpoint: str
    restored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    optimizer_restored: list[str] = field(default_factory=list)
    optimizer_fresh: list[str] = field(default_factory=list)


def read_param_map(path: str) -> dict[str, str]:
    """Reads a ``fine_tune_ckpt_param_map`` file: ``{name in this model: name in checkpoint}``.

    Raises:
        ConfigError: the file is missing, or a line is not two names or repeats a name.

    """
    if not os.path.isfile(path):
        raise ConfigError(
            f"fine_tune_ckpt_param_map file '{path}' does not exist",
            field="train_config.fine_tune_ckpt_param_map",
        )
    mapping: dict[str, str] = {}
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split()
            if len(parts) != 2:
                raise ConfigError(
                    "expected '<name in this model> <name in the checkpoint>' (two names"
                    f" separated by whitespace); found {len(parts)} field(s): '{text}'",
                    path=path,
                    line=number,
                )
            current, old = parts
            if current in mapping:
                raise ConfigError(f"'{current}' is mapped twice", path=path, line=number)
            mapping[current] = old
    return mapping


def resolve_checkpoint(path: str) -> str:
    """``path`` if it is a checkpoint, else the newest checkpoint in the directory ``path``.

    Raises:
        CheckpointError: neither.

    """
    if layout.is_checkpoint(path):
        return path
    latest = layout.latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(
            f"fine_tune_checkpoint '{path}' is neither a complete recforge checkpoint nor a"
            " directory holding one"
        )
    return latest


def _checkpoint_tensors(files: CheckpointFiles) -> dict[str, tuple[int, ...]]:
    metadata = files.metadata()  # verified against the checksums, unpickled as data only
    return {
        key: tuple(md.size)
        for key, md in metadata.state_dict_metadata.items()
        if isinstance(md, TensorStorageMetadata)
    }


def _source_key(key: str, param_map: dict[str, str]) -> str:
    """The checkpoint's name for model key ``key`` (EMA averages follow their parameter)."""
    if key.startswith(_EMA_PREFIX) and key != f"{_EMA_PREFIX}n_averaged":
        name = _WRAPPED + param_name(key[len(_EMA_PREFIX) :])
        if name in param_map and param_map[name].startswith(_WRAPPED):
            return _EMA_PREFIX + ema_key(param_map[name][len(_WRAPPED) :])
        return key
    return param_map.get(key, key)


def _table(name: str) -> str:
    """``user_emb`` of ``model.embedding_group.ebc.embedding_bags.user_emb.weight``."""
    parts = name.split(".")
    return parts[-2] if len(parts) >= 2 else name


def _optimizer_source(fqn: str, state: str, param_map: dict[str, str]) -> tuple[str, str]:
    """The checkpoint's ``(optimizer fqn, state name)`` of an optimizer state.

    ``fqn`` is ``<optimizer>.<model key>``; fused table states are named ``<table>.<state>``.
    """
    for current, old in param_map.items():
        if fqn.endswith("." + current):
            prefix = fqn[: -len(current)]
            table, old_table = _table(current), _table(old)
            if state.startswith(table + "."):
                state = old_table + state[len(table) :]
            return prefix + old, state
    return fqn, state


def _load(files: CheckpointFiles, flat: dict[str, torch.Tensor]) -> None:
    if not flat:
        return
    try:
        files.load(flat)
    except CheckpointError:
        raise
    except (Exception, CheckpointException) as e:  # DCP's is a BaseException
        cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot warm start from checkpoint '{files.directory}': {cause}"
        ) from e


def _shape(value: Any) -> Optional[tuple[int, ...]]:
    return tuple(value.size()) if isinstance(value, torch.Tensor) else None


def warm_start(
    checkpoint_path: str,
    model: nn.Module,
    optimizer: Optional[Any] = None,
    param_map_path: Optional[str] = None,
    dense_ema: Optional[DenseEMA] = None,
) -> WarmStartResult:
    """Restores the tensors of a checkpoint that fit ``model`` (and ``optimizer``).

    Args:
        checkpoint_path: a checkpoint, or a directory of checkpoints (the newest is used).
        model: the (sharded) model, as checkpoints save it.
        optimizer: its optimizer, to restore state into; None leaves the state fresh.
        param_map_path: a ``fine_tune_ckpt_param_map`` file (see the module docstring).
        dense_ema: the model's EMA; averages the checkpoint lacks start from the restored
            weights.

    Returns:
        What was restored and what was not.

    Raises:
        CheckpointError: the checkpoint cannot be found or read.
        ConfigError: a bad param map file.

    """
    checkpoint = resolve_checkpoint(checkpoint_path)
    param_map = read_param_map(param_map_path) if param_map_path else {}
    files = CheckpointFiles(checkpoint)
    check_id_hash(files.read_json(layout.TRAIN_STATE_FILE), model, checkpoint)
    saved = _checkpoint_tensors(files)
    result = WarmStartResult(checkpoint)
    if optimizer is not None and hasattr(optimizer, "init_state"):
        # lazily created optimizer state needs a target; one zero-gradient step makes it,
        # before the weights are restored (see recforge.utils.checkpoint.load_checkpoint)
        optimizer.init_state()

    model_state = model.state_dict()
    unknown = sorted(k for k in param_map if k not in model_state)
    if unknown and dist_util.rank() == 0:
        logger.warning(
            "fine_tune_ckpt_param_map names %s, which this model does not have (its keys look"
            " like '%s')",
            unknown,
            next(iter(model_state), ""),
        )
    flat: dict[str, torch.Tensor] = {}
    targets: dict[str, str] = {}
    for key, value in model_state.items():
        shape = _shape(value)
        if shape is None:
            continue
        source = _MODEL + _source_key(key, param_map)
        if source not in saved:
            result.missing.append(key)
        elif saved[source] != shape:
            result.mismatched[key] = (saved[source], shape)
        else:
            flat[source] = value
            targets[source] = key
    _load(files, flat)
    for source, key in targets.items():
        model_state[key] = flat[source]
        result.restored.append(key)
    model.load_state_dict(model_state)
    result.unused = sorted(
        k[len(_MODEL) :] for k in saved if k.startswith(_MODEL) and k not in targets
    )

    ema_missing = [k for k in result.missing if k.startswith(_EMA_PREFIX)]
    result.missing = [k for k in result.missing if not k.startswith(_EMA_PREFIX)]
    if dense_ema is not None:
        stale = ema_missing + [k for k in result.mismatched if k.startswith(_EMA_PREFIX)]
        names = [param_name(k[len(_EMA_PREFIX) :]) for k in stale]
        dense_ema.reset([n for n in names if n in dense_ema.names])

    if optimizer is not None:
        _restore_optimizer(files, optimizer, param_map, saved, result)
    _report(result)
    return result


def _restore_optimizer(
    files: CheckpointFiles,
    optimizer: Any,
    param_map: dict[str, str],
    saved: dict[str, tuple[int, ...]],
    result: WarmStartResult,
) -> None:
    state_dict = optimizer.state_dict()
    flat: dict[str, torch.Tensor] = {}
    targets: dict[str, tuple[str, str]] = {}
    for fqn, states in state_dict["state"].items():
        for name, value in states.items():
            shape = _shape(value)
            if shape is None:
                continue
            source_fqn, source_name = _optimizer_source(fqn, name, param_map)
            source = f"{_OPTIMIZER_STATE}{source_fqn}.{source_name}"
            if saved.get(source) == shape:
                flat[source] = value
                targets[source] = (fqn, name)
            else:
                result.optimizer_fresh.append(f"{fqn}.{name}")
    _load(files, flat)
    for source, (fqn, name) in targets.items():
        state_dict["state"][fqn][name] = flat[source]
        result.optimizer_restored.append(f"{fqn}.{name}")
    optimizer.load_state_dict(state_dict)


def _report(result: WarmStartResult) -> None:
    if dist_util.rank() != 0:
        return
    logger.info(
        "warm start from %s: restored %d model tensors and %d optimizer states",
        result.checkpoint,
        len(result.restored),
        len(result.optimizer_restored),
    )
    if result.missing or result.mismatched:
        shapes = [
            f"{k} (checkpoint {list(a)}, model {list(b)})"
            for k, (a, b) in result.mismatched.items()
        ]
        logger.warning(
            "warm start from %s kept the initial values of %d tensors: not in the checkpoint:"
            " %s; other shape: %s. The checkpoint's tensors left unused: %s (map names with"
            " train_config.fine_tune_ckpt_param_map)",
            result.checkpoint,
            len(result.missing) + len(result.mismatched),
            result.missing or "none",
            shapes or "none",
            result.unused or "none",
        )
    if result.optimizer_fresh:
        logger.info(
            "warm start: %d optimizer states start fresh (no matching state in the checkpoint)",
            len(result.optimizer_fresh),
        )
