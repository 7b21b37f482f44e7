"""The file layout of a ``model_dir`` and of an export directory, and checkpoint lookup.

Every name recforge reads or writes in those two directories is defined here, so a module
that needs one imports it instead of spelling it. This module imports only the error tree
(it sits below everything else in the import graph).

``model_dir`` (written by ``recforge train`` / ``evaluate`` / ``evaluate-retrieval``)::

    pipeline.config               the config the run trained with
    train.lock                    held while a training run writes here
    model.ckpt-<step>/            one checkpoint (TorchEasyRec names them the same way)
        train_state.json          step, epoch, position in the epoch; marks it complete
        checksums.json            a checksum per file of the checkpoint
        rng_rank<r>.pt            the RNG state of rank r
        *.distcp, .metadata       torch.distributed.checkpoint shards
    model.ckpt-<step>.tmp/        a checkpoint being written (renamed when complete)
    eval_result.json              the last evaluation
    eval_history.jsonl            every evaluation, a JSON line each (the ``best`` exporter)
    train_stats.json              throughput and step counts of the last training run
    retrieval_result.json         the last ``evaluate-retrieval``
    train/, eval/                 TensorBoard summaries (``train_config.use_tensorboard``)
    train_eval_trace/             torch.profiler traces (``train_config.is_profiling``)

An earlier run moved aside by ``train --overwrite`` goes to ``<model_dir>.old-<time>``.

Export directory (written by ``recforge export``)::

    scripted_model.pt             the TorchScript model
    pipeline.config               the config predict parses input with
    model_info.json               inputs, outputs, checkpoint, id hash, versions
    fg.json                       the features' FG plan in TorchEasyRec's format
    assets/<stem>_<md5><ext>      files the features read (vocabularies, tokenizers);
                                  pipeline.config and fg.json name them relative to the dir
    user/, item/                  a match model's towers, each an export directory itself
    item_index/                   ``recforge build-index``: the items' nearest-neighbour index
        faiss_index               the faiss index (row r of the index is item r)
        id_mapping                the item id of each row, one a line
        index_info.json           index type, metric, dim, count, item table, export checksum

TorchEasyRec's export also writes ``model_acc.json`` and copies ``--asset_files``; recforge
writes no ``model_acc.json`` (see :mod:`recforge.tzrec_commands`). TorchEasyRec keeps the
feature assets beside ``fg.json``; recforge keeps them in ``assets/`` (see
:mod:`recforge.export.assets`).
"""

from __future__ import annotations

import os
import re
from typing import Optional

from recforge.errors import CheckpointError

# ---- model_dir --------------------------------------------------------------------------------
CONFIG_FILE = "pipeline.config"
LOCK_FILE = "train.lock"
CHECKPOINT_PREFIX = "model.ckpt-"
CHECKPOINT_TMP_SUFFIX = ".tmp"
TRAIN_STATE_FILE = "train_state.json"
MANIFEST_FILE = "checksums.json"
EVAL_RESULT_FILE = "eval_result.json"
EVAL_HISTORY_FILE = "eval_history.jsonl"
TRAIN_STATS_FILE = "train_stats.json"
RETRIEVAL_RESULT_FILE = "retrieval_result.json"
# what a training run leaves in model_dir that a later run must not mix with
RUN_RECORDS = (EVAL_HISTORY_FILE, EVAL_RESULT_FILE, TRAIN_STATS_FILE)
OLD_RUN_INFIX = ".old-"
TRAIN_SUMMARY_DIR = "train"
TRACE_DIR = "train_eval_trace"  # train_config.is_profiling, as TorchEasyRec names it
EVAL_SUMMARY_DIR = "eval"

# ---- export directory -------------------------------------------------------------------------
MODEL_FILE = "scripted_model.pt"
MODEL_INFO_FILE = "model_info.json"
EXPORT_CONFIG_FILE = CONFIG_FILE
EXPORT_FILES = (MODEL_FILE, EXPORT_CONFIG_FILE, MODEL_INFO_FILE)
FG_JSON_FILE = "fg.json"  # TorchEasyRec's name (its export and create_fg_json tool)
ASSETS_DIR = "assets"
# recforge build-index: the file names inside the index directory are TorchEasyRec's
# (tzrec/utils/faiss_util.py writes faiss_index and id_mapping)
INDEX_DIR = "item_index"
INDEX_FILE = "faiss_index"
INDEX_IDS_FILE = "id_mapping"
INDEX_INFO_FILE = "index_info.json"

_CHECKPOINT_RE = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


def checkpoint_name(step: int) -> str:
    """The directory name of the checkpoint of ``step``: ``model.ckpt-<step>``."""
    return f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_step(path: str) -> Optional[int]:
    """The step of a checkpoint path named ``model.ckpt-<step>``, else None."""
    match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else None


def rng_file(rank: int) -> str:
    """The name of rank ``rank``'s RNG state file inside a checkpoint."""
    return f"rng_rank{rank}.pt"


def is_checkpoint(path: str) -> bool:
    """Whether ``path`` is a complete checkpoint directory (it has ``train_state.json``)."""
    return os.path.isfile(os.path.join(path, TRAIN_STATE_FILE))


def list_checkpoints(model_dir: str) -> list[str]:
    """Complete checkpoints under ``model_dir``, oldest first."""
    if not os.path.isdir(model_dir):
        return []
    found = []
    for name in os.listdir(model_dir):
        match = _CHECKPOINT_RE.match(name)
        path = os.path.join(model_dir, name)
        if match and is_checkpoint(path):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(model_dir: str) -> Optional[str]:
    """The newest complete checkpoint under ``model_dir``, or None."""
    checkpoints = list_checkpoints(model_dir)
    return checkpoints[-1] if checkpoints else None


def checkpoint_or_latest(model_dir: str, checkpoint_path: Optional[str] = None) -> str:
    """``checkpoint_path`` when given, else the newest checkpoint in ``model_dir``.

    Raises:
        CheckpointError: none given and ``model_dir`` holds no complete checkpoint.

    """
    if checkpoint_path:
        return checkpoint_path
    path = latest_checkpoint(model_dir)
    if not path:
        raise CheckpointError(f"no checkpoint found in model_dir '{model_dir}'")
    return path


def tower_export_dirs(export_dir: str) -> list[str]:
    """The tower export directories inside an export directory (``user/``, ``item/``)."""
    return [
        os.path.join(export_dir, name)
        for name in sorted(os.listdir(export_dir))
        if os.path.isfile(os.path.join(export_dir, name, MODEL_INFO_FILE))
    ]
