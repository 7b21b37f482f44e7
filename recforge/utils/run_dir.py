"""One training run per ``model_dir``: lock it, and refuse or move aside an earlier run.

A new run (no ``--continue_train``) into a ``model_dir`` that holds an earlier run's
checkpoints or records would mix with them: evaluate and export pick the newest checkpoint by
step, which may be the old run's; ``keep_checkpoint_max`` would delete the new run's own;
``eval_history.jsonl`` (which the ``best`` exporter reads) would interleave both. So that is
an error, unless ``--overwrite`` moves the old contents to ``<model_dir>.old-<time>``
(never deleting anything). Under torchrun, rank 0 does all of this and tells the other ranks
the outcome.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Optional

import torch.distributed as dist

from recforge.config import ConfigError
from recforge.utils import dist as dist_util
from recforge.utils import storage
from recforge.utils.layout import CHECKPOINT_PREFIX, LOCK_FILE, OLD_RUN_INFIX, RUN_RECORDS
from recforge.utils.run_lock import RunLock

logger = logging.getLogger(__name__)


def earlier_run(model_dir: str) -> list[str]:
    """What an earlier run left in ``model_dir``: checkpoints (partial ones too), run records."""
    if not os.path.isdir(model_dir):
        return []
    found = [
        name
        for name in os.listdir(model_dir)
        if name.startswith(CHECKPOINT_PREFIX) or name in RUN_RECORDS
    ]
    return sorted(found, key=lambda name: (not name.startswith(CHECKPOINT_PREFIX), name))


def move_aside(model_dir: str) -> str:
    """Moves everything in ``model_dir`` but the lock to a new ``<model_dir>.old-<time>``.

    Returns:
        The directory that now holds the old contents.

    """
    base = f"{os.path.normpath(model_dir)}{OLD_RUN_INFIX}{time.strftime('%Y%m%d-%H%M%S')}"
    target, n = base, 0
    while True:
        try:
            os.makedirs(target)
            break
        except FileExistsError:
            n += 1
            target = f"{base}-{n}"
    for name in os.listdir(model_dir):
        if name != LOCK_FILE and not name.startswith(f"{LOCK_FILE}."):
            os.rename(os.path.join(model_dir, name), os.path.join(target, name))
    return target


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def claim_model_dir(
    model_dir: str,
    continue_train: bool = False,
    overwrite: bool = False,
    fine_tune_checkpoint: Optional[str] = None,
) -> tuple[Optional[RunLock], Optional[str]]:
    """Locks ``model_dir`` for a training run and makes sure the run will not mix with another.

    A collective call under torchrun: rank 0 takes the lock, checks and moves; every rank
    returns once it is done, or raises the same error.

    Args:
        model_dir: the run's directory (created if needed).
        continue_train: the run resumes the run in ``model_dir``: its contents stay.
        overwrite: move an earlier run's contents aside instead of refusing.
        fine_tune_checkpoint: the checkpoint the run starts from; one inside ``model_dir``
            that ``overwrite`` moves aside is read from its new place.

    Returns:
        ``(the lock, held by rank 0 (None elsewhere): release it when training ends,
        fine_tune_checkpoint, moved along with the old contents where it was moved)``.

    Raises:
        ConfigError: another run holds the lock, or ``model_dir`` holds an earlier run and
            neither ``continue_train`` nor ``overwrite`` is set.

    """
    if continue_train and overwrite:
        raise ConfigError("--continue_train and --overwrite exclude each other: choose one")
    lock: Optional[RunLock] = None
    failure: Optional[Exception] = None
    if dist_util.rank() == 0:
        lock = RunLock(model_dir)
        try:
            lock.acquire()
            fine_tune_checkpoint = _prepare(
                model_dir, continue_train, overwrite, fine_tune_checkpoint
            )
        except Exception as e:  # the other ranks must hear of any failure, or they would hang
            lock.release()
            failure = e
    if dist_util.world_size() > 1:
        shared = [None if failure is None else str(failure), fine_tune_checkpoint]
        dist.broadcast_object_list(shared, src=0)
        if shared[0] is not None and failure is None:
            failure = ConfigError(shared[0])
        fine_tune_checkpoint = shared[1]
    if failure is not None:
        raise failure
    return lock, fine_tune_checkpoint


def _prepare(
    model_dir: str, continue_train: bool, overwrite: bool, fine_tune_checkpoint: Optional[str]
) -> Optional[str]:
    found = earlier_run(model_dir)
    if continue_train or not found:
        return fine_tune_checkpoint
    remote = storage.remote_of(model_dir)
    if overwrite and remote:
        raise ConfigError(
            f"--overwrite: model_dir '{remote}' holds an earlier run and a remote model_dir"
            " cannot be moved aside; pass --continue_train, or choose another --model_dir"
        )
    if not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        aside = (
            ""  # a remote model_dir cannot be moved aside (see above)
            if remote
            else f" --overwrite to move it aside to '{os.path.normpath(model_dir)}.old-<time>',"
        )
        raise ConfigError(
            f"model_dir '{remote or model_dir}' holds an earlier run ({shown}): pass"
            f" --continue_train to resume it,{aside} or choose another --model_dir"
        )
    moved_from = os.path.realpath(model_dir)
    target = move_aside(model_dir)
    logger.warning("--overwrite: moved the earlier run in %s to %s", model_dir, target)
    if fine_tune_checkpoint and _inside(fine_tune_checkpoint, moved_from):
        relative = os.path.relpath(os.path.realpath(fine_tune_checkpoint), moved_from)
        fine_tune_checkpoint = os.path.join(target, relative)
        logger.info("fine-tuning from %s (moved aside with the earlier run)", fine_tune_checkpoint)
    return fine_tune_checkpoint
