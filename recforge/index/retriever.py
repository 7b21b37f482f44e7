"""``recforge.load_retriever(export_dir)``: the top K items of users, from the item index.

Example:
    >>> import recforge
    >>> retriever = recforge.load_retriever("experiments/dssm_export")  # doctest: +SKIP
    >>> found = retriever.topk({"user_id": [7, 9], "age": [3, 5]}, k=10)  # doctest: +SKIP
    >>> found.item_ids[0], found.scores[0]  # doctest: +SKIP
    (array([412, 77, ...]), array([0.93, 0.91, ...], dtype=float32))

The user tower of the export (``<export_dir>/user``) embeds the rows, parsed exactly as
``load_predictor`` parses them; the index ``recforge build-index`` wrote into
``<export_dir>/item_index`` finds their nearest items (exact for ``flat``).

"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from recforge.errors import PredictError
from recforge.index.build import TOWERS, embedding_output, tower_dir
from recforge.index.errors import RetrievalIndexError
from recforge.index.faiss_backend import require_faiss, set_search_params
from recforge.index.files import index_dir, read_index, read_index_info
from recforge.predictor import DEFAULT_BATCH_SIZE, Predictor, resolve_export_dir

__all__ = ["Retriever", "TopK", "load_retriever"]


@dataclass
class TopK:
    """The items found for each user, best first.

    Attributes:
        item_ids: per user, the item ids ``[k]`` (int64 or str, as in the item table).
        scores: per user, ``[k]`` float32: the inner product (metric ``ip``, higher is closer)
            or the squared L2 distance (``l2``, lower is closer). An approximate index that
            reaches fewer than k items for a user gives that user shorter arrays.

    """

    item_ids: list[np.ndarray]
    scores: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.item_ids)

    def to_json(self) -> list[dict[str, list]]:
        """``[{"item_ids": [...], "scores": [...]}, ...]``, one object per user."""
        return [
            {"item_ids": ids.tolist(), "scores": scores.tolist()}
            for ids, scores in zip(self.item_ids, self.scores)
        ]


class Retriever:
    """A match-model export with its item index: user rows in, top K item ids out.

    Args:
        export_dir: the export directory (``recforge export`` of a match model, then
            ``recforge build-index``); a MIND export's users are searched by each interest
            (see :func:`merge_interest_results`).
        batch_size: user rows embedded at once.
        nprobe: ``ivf`` index: cells searched per query (default: as built).
        ef_search: ``hnsw`` index: search candidate list length (default: as built).

    Raises:
        RetrievalIndexError: faiss is missing, there is no index, or it was built for another
            export or is damaged (one line naming the file).
        ExportError: not the export of a match model.

    """

    def __init__(
        self,
        export_dir: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        nprobe: Optional[int] = None,
        ef_search: Optional[int] = None,
    ) -> None:
        self._faiss = require_faiss("load_retriever")
        self.export_dir = resolve_export_dir(export_dir)
        self.info: dict[str, Any] = read_index_info(self.export_dir)
        self.user = Predictor(tower_dir(self.export_dir, "user"), batch_size=batch_size)
        self._output = embedding_output(self.user, "user")
        dim = next(
            o["shape"][-1] for o in self.user.model_info["outputs"] if o["name"] == TOWERS["user"]
        )
        if dim != self.info["dim"]:
            raise RetrievalIndexError(
                f"{index_dir(self.export_dir)}: expected dimension {dim} (the user tower's),"
                f" found {self.info['dim']}; rebuild it with recforge build-index"
            )
        self.index, self.item_ids = read_index(self._faiss, self.export_dir, self.info)
        set_search_params(
            self._faiss,
            self.index,
            nprobe if nprobe is not None else self.info.get("nprobe"),
            ef_search if ef_search is not None else self.info.get("ef_search"),
        )

    @property
    def input_columns(self) -> list[str]:
        """Columns the user rows must have (the user tower's)."""
        return self.user.input_columns

    @property
    def num_items(self) -> int:
        """Items in the index."""
        return int(self.info["count"])

    def check_k(self, k: Any) -> int:
        """``k`` as an int in ``[1, num_items]``.

        Raises:
            PredictError: ``k`` is not such an integer.

        """
        if (
            isinstance(k, bool)
            or not isinstance(k, (int, np.integer))
            or not 1 <= k <= self.num_items
        ):
            raise PredictError(
                f"k: expected an integer from 1 to {self.num_items} (the items in the index),"
                f" found {k!r}"
            )
        return int(k)

    def embed(self, user_rows: Any) -> np.ndarray:
        """User embeddings of a table / DataFrame / dict of columns, float32.

        ``[U, D]``, or ``[U, K, D]`` for a multi-interest user tower (MIND; its masked
        interests are zero vectors).
        """
        found = self.user.predict(user_rows, [self._output])[self._output]
        return np.ascontiguousarray(found, dtype=np.float32)

    def topk(self, user_rows: Any, k: int = 10) -> TopK:
        """The ``k`` nearest items of each user row.

        Args:
            user_rows: a pyarrow Table / RecordBatch, a pandas DataFrame or a dict of columns
                holding :attr:`input_columns`; one user per row.
            k: items per user.

        Returns:
            Item ids and scores per user, in row order (see :class:`TopK`).

        Raises:
            PredictError: a bad ``k``.
            DataError, FeatureError: a missing column or a value the features cannot parse.

        """
        k = self.check_k(k)
        users = self.embed(user_rows)
        if users.shape[0] == 0:
            return TopK([], [])
        if users.ndim == 3:
            return self._topk_interests(users, k)
        scores, rows = self.index.search(users, k)
        item_ids, item_scores = [], []
        for row_scores, row_items in zip(scores, rows):
            found = row_items >= 0  # -1: an approximate index reached fewer than k items
            item_ids.append(self.item_ids[row_items[found]])
            item_scores.append(row_scores[found].astype(np.float32))
        return TopK(item_ids, item_scores)

    def _topk_interests(self, users: np.ndarray, k: int) -> TopK:
        """Top K of multi-interest users ``[U, K, D]``: each real interest searched, merged."""
        num_users, num_interests, dim = users.shape
        scores, rows = self.index.search(users.reshape(-1, dim), k)
        shape = (num_users, num_interests, -1)
        valid = np.abs(users).max(axis=2) > 0
        merged = merge_interest_results(
            scores.reshape(shape), rows.reshape(shape), valid, k, self.info["metric"] == "ip"
        )
        return TopK(
            [self.item_ids[r] for r, _ in merged], [s.astype(np.float32) for _, s in merged]
        )

    def __repr__(self) -> str:
        return (
            f"Retriever({self.export_dir!r}, index={self.info['index_type']},"
            f" metric={self.info['metric']}, items={self.num_items}, dim={self.info['dim']})"
        )


def merge_interest_results(
    scores: np.ndarray,
    rows: np.ndarray,
    valid: np.ndarray,
    k: int,
    higher_is_closer: bool,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Merges the searches of each user's interests into one top K per user.

    An item's score is its best over the user's real interests (as ``evaluate-retrieval``
    scores MIND users; TorchEasyRec's hit-rate tool unites per-interest top Ks by default);
    each item appears once.

    Args:
        scores: ``[U, K, k]`` the search scores of each interest.
        rows: ``[U, K, k]`` the index rows found (-1: none).
        valid: ``[U, K]`` which interests are real (masked ones are not searched results).
        k: items per user.
        higher_is_closer: True for inner product, False for L2 distance.

    Returns:
        Per user, ``(rows [<=k], scores [<=k])``, best first.

    """
    merged = []
    for user_scores, user_rows, user_valid in zip(scores, rows, valid):
        found_rows = user_rows[user_valid].ravel()
        found_scores = user_scores[user_valid].ravel()
        keep = found_rows >= 0
        found_rows, found_scores = found_rows[keep], found_scores[keep]
        order = np.argsort(-found_scores if higher_is_closer else found_scores, kind="stable")
        found_rows, found_scores = found_rows[order], found_scores[order]
        _, first = np.unique(found_rows, return_index=True)  # an item's best score comes first
        best = np.sort(first)[:k]
        merged.append((found_rows[best], found_scores[best]))
    return merged


def load_retriever(export_dir: str, **kwargs: Any) -> Retriever:
    """Loads an export directory with its item index (see :class:`Retriever`)."""
    return Retriever(os.fspath(export_dir), **kwargs)
