"""Retrieval with match models: full-corpus evaluation.

* Tower export (``<export_dir>/user``, ``<export_dir>/item``) lives in
  :mod:`recforge.export.towers`; :func:`export_towers` and :func:`script_tower` are
  re-exported here.
* :func:`evaluate_retrieval` (``recforge evaluate-retrieval``) embeds every item of the item
  table and every user of the eval data, retrieves each user's top K items by exact search
  (batched matrix product + top-k in torch, or faiss when installed and asked for) and reports
  recall@K and hit-rate@K, beside the same numbers for recommending the most popular items.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from recforge.datasets.data_parser import DataParser
from recforge.datasets.dataset import candidate_sequence
from recforge.datasets.errors import DataError
from recforge.datasets.readers import create_reader
from recforge.datasets.sampler import ItemTable, SequenceSplitter, load_item_table
from recforge.errors import RecforgeError
from recforge.export.scripting import TowerScriptWrapper, script_tower
from recforge.export.towers import export_towers
from recforge.features import BaseFeature
from recforge.models.match_model import MatchModel
from recforge.utils import storage
from recforge.utils.layout import RETRIEVAL_RESULT_FILE as RESULT_FILE

if TYPE_CHECKING:
    from recforge.protos import data_pb2

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = (10, 50, 100)


class RetrievalError(RecforgeError):
    """A retrieval evaluation or tower export request does not fit the model or the data."""


# ---- full-corpus evaluation -------------------------------------------------------------------
def _read_columns(
    data_config: data_pb2.DataConfig, input_path: str, columns: Sequence[str]
) -> pa.Table:
    reader = create_reader(
        data_config, input_path, batch_size=65536, selected_columns=list(dict.fromkeys(columns))
    )
    present = set(reader.column_names())
    for column in columns:
        if column not in present:
            raise DataError(
                f"{reader.files[0]}: column '{column}' not found; available columns:"
                f" {sorted(present)}"
            )
    batches = list(reader.iter_batches(0, 1, 0))
    if not batches:
        raise DataError(f"no rows in '{input_path}'")
    return pa.Table.from_batches(batches).combine_chunks()


def embed_table(
    tower: nn.Module, features: Sequence[BaseFeature], table: pa.Table, batch_size: int = 4096
) -> torch.Tensor:
    """Embeds every row of ``table`` with a tower: ``[rows, D]`` (MIND users: ``[rows, K, D]``)."""
    parser = DataParser(list(features))
    parts = []
    with torch.no_grad():
        for rb in table.to_batches(max_chunksize=batch_size):
            parts.append(tower(parser.parse_batch(rb)).float())
    return torch.cat(parts)


def _interest_mask(user_emb: torch.Tensor) -> torch.Tensor:
    """``[U, K]``: the real interests of multi-interest users (masked ones are zero vectors)."""
    return user_emb.abs().amax(dim=2) > 0


def _user_scores(user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
    """Scores ``[U, N]``; a multi-interest user (``[U, K, D]``) scores by its best interest.

    TorchEasyRec's hit-rate tool retrieves the top K per interest and unites them by default,
    and takes this maximum over the interests with ``--topk_across_interests``; one ranked
    list per user makes recall@K comparable with single-embedding models, so it is used here.
    """
    if user_emb.dim() == 2:
        return user_emb @ item_emb.t()
    scores = torch.matmul(user_emb, item_emb.t())  # [U, K, N]
    scores = scores.masked_fill(~_interest_mask(user_emb).unsqueeze(2), -torch.inf)
    return scores.amax(dim=1)


def _faiss_top_k(
    user_emb: torch.Tensor, item_emb: torch.Tensor, k: int, excluded: list[np.ndarray]
) -> torch.Tensor:
    try:
        import faiss
    except ImportError:
        raise RetrievalError(
            "--backend faiss needs the faiss extra: pip install recforge[faiss]"
        ) from None
    index = faiss.IndexFlatIP(item_emb.shape[1])
    index.add(item_emb.numpy().astype(np.float32))
    extra = max((e.size for e in excluded), default=0)
    if user_emb.dim() == 2:
        user_emb = user_emb.unsqueeze(1)
    num_users, num_interests = user_emb.shape[:2]
    flat = user_emb.reshape(num_users * num_interests, -1).numpy().astype(np.float32)
    # each interest's top k + extra contains the user's top k by its best interest
    distances, found = index.search(flat, k + extra)
    distances = distances.reshape(num_users, -1)
    found = found.reshape(num_users, -1)
    real = _interest_mask(user_emb).repeat_interleave(k + extra, dim=1).numpy()
    rows = []
    for u in range(num_users):
        keep = real[u] & (found[u] >= 0) & ~np.isin(found[u], excluded[u])
        candidates, scores = found[u][keep], distances[u][keep]
        order = np.argsort(-scores, kind="stable")
        _, first = np.unique(candidates[order], return_index=True)
        rows.append(candidates[order][np.sort(first)][:k])
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def _top_k(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    k: int,
    excluded: list[np.ndarray],
    backend: str,
) -> torch.Tensor:
    """Indices ``[U, k]`` of each user's highest-scoring items, skipping its excluded ones.

    ``user_emb`` is ``[U, D]``, or ``[U, K, D]`` for multi-interest users (MIND), who score
    an item by their best interest.
    """
    if backend == "faiss":
        return _faiss_top_k(user_emb, item_emb, k, excluded)
    num_items = item_emb.shape[0]
    per_user = num_items * (user_emb.shape[1] if user_emb.dim() == 3 else 1)
    chunk = int(max(1, min(1024, 50_000_000 // max(per_user, 1))))
    out = []
    for start in range(0, user_emb.shape[0], chunk):
        scores = _user_scores(user_emb[start : start + chunk], item_emb)
        for offset in range(scores.shape[0]):
            seen = excluded[start + offset]
            if seen.size:
                scores[offset, torch.from_numpy(seen)] = -torch.inf
        out.append(scores.topk(k, dim=1).indices)
    return torch.cat(out)


def _scores(top: torch.Tensor, relevant: list[np.ndarray], ks: Sequence[int]) -> dict[str, float]:
    hits = np.zeros((len(relevant), len(ks)))
    ranked = top.numpy()
    for u, items in enumerate(relevant):
        found = np.isin(ranked[u], items)
        hits[u] = [found[:k].sum() for k in ks]
    sizes = np.array([len(r) for r in relevant], dtype=np.float64)[:, None]
    metrics = {}
    for j, k in enumerate(ks):
        metrics[f"recall@{k}"] = float((hits[:, j : j + 1] / sizes).mean())
        metrics[f"hit_rate@{k}"] = float((hits[:, j] > 0).mean())
    return metrics


def _item_rows(
    items: ItemTable, column: pa.ChunkedArray, splitter: Optional[SequenceSplitter]
) -> tuple[np.ndarray, np.ndarray]:
    """The item table row of each item of ``column`` and the input row it is on, ``[Q]`` each.

    A candidate sequence column (``splitter``: hstu_match's several positives per row) is split
    as its feature splits it; otherwise each row holds one item.
    """
    if splitter is None:
        index = items.index_of(column)
        return index, np.arange(len(index))
    values, counts = splitter.split_sequence(column.combine_chunks())
    return items.index_of(values), np.repeat(np.arange(len(counts)), counts)


def _groups(users: np.ndarray, values: np.ndarray, num_users: int) -> list[np.ndarray]:
    order = np.argsort(users, kind="stable")
    bounds = np.searchsorted(users[order], np.arange(num_users + 1))
    return [np.unique(values[order[bounds[u] : bounds[u + 1]]]) for u in range(num_users)]


def evaluate_retrieval(
    config_path: str,
    checkpoint_path: Optional[str] = None,
    eval_input_path: Optional[str] = None,
    item_table_path: Optional[str] = None,
    user_id_field: Optional[str] = None,
    item_id_field: Optional[str] = None,
    top_k: Sequence[int] = DEFAULT_TOP_K,
    exclude_train: bool = False,
    train_input_path: Optional[str] = None,
    backend: str = "torch",
    edits: Optional[dict[str, str]] = None,
    plugins: Sequence[str] = (),
    model_dir: Optional[str] = None,
) -> dict[str, float]:
    """Full-corpus retrieval metrics of a match model's checkpoint.

    Every item of the item table is embedded by the item tower and every distinct user of the
    eval data (its first row) by the user tower; a user's relevant items are the items of its
    eval rows. recall@K is the share of a user's relevant items among its top K, hit-rate@K
    the share of users with at least one, both averaged over users. ``popularity_*`` are the
    same metrics for recommending the items with the most training interactions.

    Args:
        config_path: the pipeline config (e.g. ``model_dir/pipeline.config``).
        checkpoint_path: the checkpoint (default: newest in ``model_dir``).
        eval_input_path: overrides the config's ``eval_input_path``.
        item_table_path: the item table (default: ``data_config.negative_sampler.input_path``).
        user_id_field: column identifying a user (default: the first input column of the
            user tower's first feature).
        item_id_field: item id column (default: ``negative_sampler.item_id_field``).
        top_k: the cut-offs K.
        exclude_train: never retrieve an item the user interacted with in the training data
            (``train_input_path``), unless it is also one of its eval items.
        train_input_path: overrides the config's ``train_input_path`` (training interactions
            for the exclusion and the popularity baseline).
        backend: ``torch`` (exact, batched matmul + top-k) or ``faiss`` (exact inner-product
            index; needs faiss-cpu).
        edits: ``{"dotted.field": "value"}`` config overrides.
        plugins: modules to import first.
        model_dir: overrides the config's ``model_dir``.

    Returns:
        ``recall@K``, ``hit_rate@K``, ``popularity_recall@K``, ``popularity_hit_rate@K`` for
        every K, and ``num_users`` / ``num_items``; also written to
        ``model_dir/retrieval_result.json``.

    Raises:
        RetrievalError: not a match model, bad ``top_k`` or backend.
        DataError: a missing column or file (named in the message).

    """
    from recforge.export import restore_model
    from recforge.protos import sampler_pb2
    from recforge.utils.layout import checkpoint_or_latest
    from recforge.utils.logging_util import setup_logging
    from recforge.utils.pipeline import model_dir_path, prepare_config

    setup_logging()
    config = prepare_config(config_path, edits, plugins, model_dir)
    ks = sorted({int(k) for k in top_k})
    if not ks or ks[0] < 1:
        raise RetrievalError(f"top_k must be positive integers, found {list(top_k)}")
    if backend not in ("torch", "faiss"):
        raise RetrievalError(f"backend must be 'torch' or 'faiss', found '{backend}'")
    eval_input_path = eval_input_path or config.eval_input_path
    if not eval_input_path:
        raise RetrievalError("nothing to evaluate: set eval_input_path or --eval_input_path")
    checkpoint_path = checkpoint_or_latest(
        config.model_dir, storage.fetch(checkpoint_path, "checkpoint") if checkpoint_path else None
    )
    model, state = restore_model(config, checkpoint_path, config.eval_config)
    logger.info("evaluating checkpoint %s (step %s)", checkpoint_path, state.get("global_step"))
    if not isinstance(model, MatchModel):
        raise RetrievalError(
            f"evaluate-retrieval needs a match model (DSSM, DSSMV2, DAT, MIND); the config builds"
            f" {type(model).__name__}"
        )
    data_config = config.data_config
    sampler = sampler_pb2.NegativeSampler()
    kind = data_config.WhichOneof("sampler")
    if kind == "negative_sampler":
        sampler.CopyFrom(data_config.negative_sampler)
    elif kind is not None and kind != "tdm_sampler":  # the edge samplers' item table
        edge = getattr(data_config, kind)
        sampler.input_path, sampler.item_id_field = edge.item_input_path, edge.item_id_field
        sampler.attr_delimiter, sampler.field_delimiter = edge.attr_delimiter, edge.field_delimiter
    item_features = model.tower_features("item")
    user_features = model.tower_features("user")
    if item_table_path:
        sampler.input_path = item_table_path
    if item_id_field:
        sampler.item_id_field = item_id_field
    if not sampler.input_path or not sampler.item_id_field:
        raise RetrievalError(
            "evaluate-retrieval needs the item table and its id column: set"
            " data_config.negative_sampler or --item_table_path and --item_id_field"
        )
    del sampler.attr_fields[:]
    sampler.attr_fields.extend(dict.fromkeys(c for f in item_features for c in f.inputs))
    items: ItemTable = load_item_table(sampler, data_config.delimiter)
    user_id_field = user_id_field or user_features[0].inputs[0]

    logger.info("embedding %d items of %s", items.num_items, sampler.input_path)
    item_emb = embed_table(model.tower_module("item"), item_features, items.table)

    user_columns = [c for f in user_features for c in f.inputs]
    eval_table = _read_columns(
        data_config, eval_input_path, [user_id_field, sampler.item_id_field, *user_columns]
    )
    eval_users = eval_table.column(user_id_field)
    if eval_users.null_count:
        raise DataError(f"{eval_input_path}: user id column '{user_id_field}' has nulls")
    unique_users = pc.unique(eval_users)
    user_pos = pc.index_in(eval_users, value_set=unique_users).to_numpy(zero_copy_only=False)
    splitter = candidate_sequence(model.features, sampler.item_id_field)
    item_pos, item_row = _item_rows(items, eval_table.column(sampler.item_id_field), splitter)
    known = item_pos >= 0
    if not known.any():
        raise DataError(
            f"no item of '{eval_input_path}' column '{sampler.item_id_field}' is in the item"
            f" table '{sampler.input_path}'"
        )
    if (~known).any():
        logger.warning("%d eval items are missing from the item table", int((~known).sum()))
    num_users = len(unique_users)
    relevant_all = _groups(user_pos[item_row][known], item_pos[known], num_users)
    has_relevant = np.array([r.size > 0 for r in relevant_all])
    first_row = np.full(num_users, -1, dtype=np.int64)
    first_row[user_pos[::-1]] = np.arange(len(user_pos))[::-1]
    users_kept = np.flatnonzero(has_relevant)
    relevant = [relevant_all[u] for u in users_kept]
    user_rows = eval_table.take(pa.array(first_row[users_kept]))
    logger.info("embedding %d eval users of %s", users_kept.size, eval_input_path)
    user_emb = embed_table(model.tower_module("user"), user_features, user_rows)

    train_path = train_input_path or config.train_input_path
    excluded = [np.empty(0, dtype=np.int64)] * users_kept.size
    counts = items.weights.copy()
    if train_path:
        train = _read_columns(data_config, train_path, [user_id_field, sampler.item_id_field])
        train_items, train_row = _item_rows(items, train.column(sampler.item_id_field), splitter)
        counts = np.bincount(train_items[train_items >= 0], minlength=items.num_items).astype(
            np.float64
        )
        if exclude_train:
            kept_users = unique_users.take(pa.array(users_kept))
            train_user_pos = pc.index_in(train.column(user_id_field), value_set=kept_users)
            train_user_pos = pc.fill_null(train_user_pos, -1).to_numpy(zero_copy_only=False)
            train_user_pos = train_user_pos[train_row]
            ok = (train_user_pos >= 0) & (train_items >= 0)
            seen = _groups(train_user_pos[ok], train_items[ok], users_kept.size)
            excluded = [np.setdiff1d(s, r) for s, r in zip(seen, relevant)]
    elif exclude_train:
        raise RetrievalError("--exclude_train needs train_input_path (config or command line)")

    k_max = min(ks[-1], items.num_items - max((e.size for e in excluded), default=0))
    if k_max < ks[-1]:
        raise RetrievalError(f"top_k {ks[-1]} is larger than the items left to retrieve ({k_max})")
    top = _top_k(user_emb, item_emb, ks[-1], excluded, backend)
    metrics = _scores(top, relevant, ks)
    # most-popular baseline: the same ranking for everyone (ties broken by table order)
    popularity = torch.from_numpy(counts - np.arange(items.num_items) * 1e-9).float()
    top_pop = _top_k(
        torch.ones(users_kept.size, 1), popularity.unsqueeze(1), ks[-1], excluded, "torch"
    )
    metrics.update({f"popularity_{k}": v for k, v in _scores(top_pop, relevant, ks).items()})
    metrics["num_users"] = int(users_kept.size)
    metrics["num_items"] = int(items.num_items)
    result = {
        "global_step": int(state.get("global_step", 0)),
        "checkpoint": storage.remote_of(checkpoint_path) or os.path.abspath(checkpoint_path),
        "exclude_train": bool(exclude_train),
        "backend": backend,
        **metrics,
    }
    with open(model_dir_path(config, RESULT_FILE), "w") as f:
        json.dump(result, f, indent=1)
    storage.sync_model_dir(config.model_dir)  # a remote model_dir: upload it now
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "@" in k)
    logger.info("retrieval over %d users, %d items: %s", users_kept.size, items.num_items, shown)
    return metrics


__all__ = [
    "RetrievalError",
    "TowerScriptWrapper",
    "embed_table",
    "evaluate_retrieval",
    "export_towers",
    "script_tower",
]
