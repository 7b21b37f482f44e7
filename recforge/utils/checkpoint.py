"""Checkpoints with torch.distributed.checkpoint: atomic, reshardable, resumable.

A checkpoint is a directory ``model_dir/model.ckpt-<step>/`` holding the DCP shards of the
model and optimizer, ``train_state.json`` (step, epoch, position in the epoch), one RNG
file per rank and ``checksums.json`` (a checksum per file). It is written under a temporary
name and renamed once every rank has finished, so a crash mid-write never leaves a directory
that looks complete. It is read back as data only, each file checked against its checksum
(:mod:`recforge.utils.checkpoint_format`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Optional

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException

from recforge.utils import dist as dist_util
from recforge.utils import storage
from recforge.utils.checkpoint_format import (
    CheckpointError,
    CheckpointFiles,
    file_digest,
    write_manifest,
)
from recforge.utils.checkpoint_views import ViewSavePlanner
from recforge.utils.disk import disk_full_message, is_disk_full
from recforge.utils.embedding_files import sequential_access
from recforge.utils.id_hash import ID_HASH, ID_HASH_KEY, check_id_hash
from recforge.utils.layout import (
    CHECKPOINT_PREFIX,
    CHECKPOINT_TMP_SUFFIX,
    TRAIN_STATE_FILE,
    checkpoint_name,
    checkpoint_or_latest,
    latest_checkpoint,
    list_checkpoints,
    rng_file,
)

__all__ = [
    "CHECKPOINT_PREFIX",
    "TRAIN_STATE_FILE",
    "CheckpointError",
    "checkpoint_or_latest",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]


def save_checkpoint(
    model_dir: str,
    step: int,
    model: nn.Module,
    optimizer: Optional[Any],
    train_state: dict[str, Any],
    keep_checkpoint_max: int = 0,
) -> str:
    """Writes ``model_dir/model.ckpt-<step>`` atomically (collective: every rank calls it).

    Args:
        model_dir: where checkpoints live.
        step: global step, used in the name.
        model: the (sharded) model.
        optimizer: the keyed optimizer, or None.
        train_state: JSON-able progress (step, epoch, ...), written by rank 0.
        keep_checkpoint_max: delete older checkpoints beyond this many (0 keeps all).

    Returns:
        The final checkpoint path.

    """
    final = os.path.join(model_dir, checkpoint_name(step))
    tmp = final + CHECKPOINT_TMP_SUFFIX
    if dist_util.rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
    dist_util.barrier()
    state: dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    # one file per tensor: with one file per rank, DCP keeps every tensor it wrote to the file
    # alive until the file is closed
    try:
        with sequential_access():  # file-backed tables: read ahead while writing them out
            dcp.save(
                state,
                storage_writer=dcp.FileSystemWriter(tmp, single_file_per_rank=False),
                planner=ViewSavePlanner(),  # tables written from their buffers, not from copies
            )
        torch.save(torch.get_rng_state(), os.path.join(tmp, rng_file(dist_util.rank())))
        dist_util.barrier()
        digests = _digest_files(tmp)
        if dist_util.rank() == 0:
            with open(os.path.join(tmp, TRAIN_STATE_FILE), "w") as f:
                json.dump({**train_state, ID_HASH_KEY: ID_HASH}, f)
            digests[TRAIN_STATE_FILE] = file_digest(os.path.join(tmp, TRAIN_STATE_FILE))
            write_manifest(tmp, digests)
    except (OSError, CheckpointException) as e:
        full = _disk_full_cause(e)
        if full is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"{disk_full_message(tmp, full)} while saving the checkpoint of step {step};"
            " the earlier checkpoints are intact"
        ) from None
    if dist_util.rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        removed = []
        if keep_checkpoint_max > 0:
            for old in list_checkpoints(model_dir)[:-keep_checkpoint_max]:
                shutil.rmtree(old, ignore_errors=True)
                removed.append(old)
        # a remote model_dir: upload the checkpoint now (nothing happens for a local one)
        storage.sync_model_dir(model_dir, tuple(removed))
    dist_util.barrier()
    return final


def _disk_full_cause(error: BaseException) -> Optional[OSError]:
    """The disk-full ``OSError`` behind ``error`` (DCP wraps each rank's failure), if any."""
    causes: list[Optional[BaseException]] = [error]
    if isinstance(error, CheckpointException):
        causes += [failure for failure, _ in error.failures.values()]
    for cause in causes:
        while cause is not None:
            if is_disk_full(cause):
                return cause
            cause = cause.__cause__ or cause.__context__
    return None


def _digest_files(directory: str) -> dict[str, str]:
    """Checksums of every file in ``directory``, each rank hashing its share (collective)."""
    names = sorted(os.listdir(directory))
    mine = {
        name: file_digest(os.path.join(directory, name))
        for name in names[dist_util.rank() :: dist_util.world_size()]
    }
    digests: dict[str, str] = {}
    for part in dist_util.all_gather_object(mine):
        digests.update(part)
    return digests


# an embedding table's weight among the model's keys (pooled or unpooled collection)
_TABLE_KEY = re.compile(r"\.(?:embedding_bags|sequence_ecs\.dim_\d+\.embeddings)\.[^.]+\.weight$")


def _check_tables(files: CheckpointFiles, model_state: dict[str, Any]) -> None:
    """Refuses a checkpoint holding an embedding table the model has no place for.

    DCP loads what the model asks for and skips the rest, so a table the model dropped or
    moved (e.g. the pooled twin of a table that sequence groups now share) would vanish
    silently.

    Raises:
        CheckpointError: naming the first such key.

    """
    unexpected = sorted(
        key
        for key in files.metadata().state_dict_metadata
        if key.startswith("model.") and _TABLE_KEY.search(key) and key[6:] not in model_state
    )
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(
            f"cannot restore checkpoint '{files.directory}': unexpected key in checkpoint"
            f" state_dict: {unexpected[0][6:]}{more}; the model has no such table (was the"
            " checkpoint written for another model config, or before recforge shared one table"
            " between pooled and sequence features of one embedding_name?)"
        )


def load_checkpoint(
    checkpoint_path: str,
    model: nn.Module,
    optimizer: Optional[Any] = None,
    restore_rng: bool = False,
) -> dict[str, Any]:
    """Restores a checkpoint into ``model`` (and ``optimizer``); returns its train state.

    Works across world sizes: DCP reshards saved tables onto the current plan. Every file
    is checked against the checkpoint's checksums before it is read, and read as data only.

    Raises:
        CheckpointError: the directory is missing, incomplete, corrupt or unsafe (naming the
            file), or does not fit the model.

    """
    state_file = os.path.join(checkpoint_path, TRAIN_STATE_FILE)
    if not os.path.isfile(state_file):
        raise CheckpointError(
            f"'{checkpoint_path}' is not a complete recforge checkpoint (no {TRAIN_STATE_FILE});"
            " it may be missing or from a run that crashed while saving"
        )
    files = CheckpointFiles(checkpoint_path)
    train_state = files.read_json(TRAIN_STATE_FILE)
    check_id_hash(train_state, model, checkpoint_path)
    train_state.pop(ID_HASH_KEY, None)  # a property of the checkpoint, not of the run's progress
    files.metadata()  # refused before the optimizer below is touched
    try:
        if optimizer is not None and hasattr(optimizer, "init_state"):
            # torch optimizers create their state lazily: materialise it so DCP has a target
            # (before the model is restored: this takes one zero-gradient step)
            optimizer.init_state()
        with sequential_access():  # file-backed tables: whole-table writes, read ahead
            model_state = model.state_dict()
            _check_tables(files, model_state)
            files.load({"model": model_state})
            model.load_state_dict(model_state)
            if optimizer is not None:
                optimizer_state = optimizer.state_dict()
                files.load({"optimizer": optimizer_state})
                optimizer.load_state_dict(optimizer_state)
    except CheckpointError:
        raise
    except (Exception, CheckpointException) as e:  # DCP's is a BaseException
        # DCP's message embeds each rank's traceback: its last line is the cause
        cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot restore checkpoint '{checkpoint_path}': {cause}") from e
    rng_name = rng_file(dist_util.rank())
    # a run resumed on more ranks than it was saved from has no RNG file for the extra ranks
    if restore_rng and (rng_name in (files.digests or {}) or os.path.isfile(files.path(rng_name))):
        rng_state = files.read_tensor(rng_name)
        try:
            torch.set_rng_state(rng_state)
        except (RuntimeError, TypeError) as e:
            raise CheckpointError(f"{files.path(rng_name)}: not an RNG state ({e})") from None
    return train_state
