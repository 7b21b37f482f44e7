"""faiss, the optional dependency of item indexes: which index a setting builds, search knobs.

faiss is imported only inside these functions, so that recforge imports without it; a missing
faiss is one :class:`RetrievalIndexError` naming the ``faiss`` extra.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Optional

from recforge.index.errors import EXTRA_HINT, RetrievalIndexError

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "ivf", "hnsw")
METRICS = ("ip", "l2")
# TorchEasyRec's create_faiss_index defaults (ivf_nlist 1000, hnsw_M 32, efConstruction 200)
DEFAULT_NLIST = 1000
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_EF_SEARCH = 64
# faiss warns below this many training points per inverted list (k-means quality)
MIN_POINTS_PER_LIST = 39


def require_faiss(where: str) -> ModuleType:
    """The ``faiss`` module.

    Args:
        where: the command or function that needs it, for the message.

    Raises:
        RetrievalIndexError: faiss is not installed (``where: needs the faiss extra: ...``).

    """
    try:
        import faiss
    except ImportError:
        raise RetrievalIndexError(f"{where}: {EXTRA_HINT}") from None
    return faiss


@dataclass
class IndexParams:
    """What index to build and how to search it.

    Attributes:
        index_type: ``flat`` (exact), ``ivf`` (inverted lists over k-means cells) or ``hnsw``
            (a proximity graph).
        metric: ``ip`` (inner product, higher is closer) or ``l2`` (squared L2 distance,
            lower is closer).
        nlist: ``ivf``: k-means cells (None: TorchEasyRec's 1000, lowered to
            count / 39 for small tables so that k-means has enough points per cell).
        nprobe: ``ivf``: cells searched per query (None: a quarter of ``nlist``; TorchEasyRec's
            hitrate tool probes 800 of 1000).
        m: ``hnsw``: neighbours per graph node.
        ef_construction: ``hnsw``: candidate list length while building.
        ef_search: ``hnsw``: candidate list length while searching (at least k is used).

    """

    index_type: str = "flat"
    metric: str = "ip"
    nlist: Optional[int] = None
    nprobe: Optional[int] = None
    m: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    ef_search: int = DEFAULT_EF_SEARCH

    def check(self, count: Optional[int] = None) -> IndexParams:
        """These settings for ``count`` items, defaults filled in (None: check only the flags).

        Raises:
            RetrievalIndexError: an unknown type or metric, a setting below 1, ``nlist``
                above ``count`` or ``nprobe`` above ``nlist`` (the message names the flag).

        """
        if self.index_type not in INDEX_TYPES:
            raise RetrievalIndexError(
                f"--index_type: expected one of {', '.join(INDEX_TYPES)}, found '{self.index_type}'"
            )
        if self.metric not in METRICS:
            raise RetrievalIndexError(
                f"--metric: expected one of {', '.join(METRICS)}, found '{self.metric}'"
            )
        for name in ("nlist", "nprobe", "m", "ef_construction", "ef_search"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RetrievalIndexError(f"--{name}: expected at least 1, found {value}")
        if count is None:
            return self
        nlist = self.nlist
        if self.index_type == "ivf":
            if nlist is None:
                nlist = max(1, min(DEFAULT_NLIST, count // MIN_POINTS_PER_LIST))
            elif nlist > count:
                raise RetrievalIndexError(
                    f"--nlist: expected at most the number of items ({count}), found {nlist}"
                )
        nprobe = self.nprobe
        if self.index_type == "ivf":
            assert nlist is not None  # set above for ivf
            nprobe = nprobe if nprobe is not None else max(1, nlist // 4)
            if nprobe > nlist:
                raise RetrievalIndexError(
                    f"--nprobe: expected at most --nlist ({nlist}), found {nprobe}"
                )
        return IndexParams(
            self.index_type,
            self.metric,
            nlist,
            nprobe,
            self.m,
            self.ef_construction,
            self.ef_search,
        )

    def to_json(self) -> dict[str, Any]:
        """The settings that apply to this index type, for ``index_info.json``."""
        settings = asdict(self)
        used = {
            "flat": (),
            "ivf": ("nlist", "nprobe"),
            "hnsw": ("m", "ef_construction", "ef_search"),
        }
        keep = ("index_type", "metric", *used[self.index_type])
        return {k: settings[k] for k in keep}


def create_index(faiss: ModuleType, params: IndexParams, dim: int) -> Any:
    """An empty faiss index of ``params`` (checked by :meth:`IndexParams.check`) for ``dim``."""
    metric = faiss.METRIC_INNER_PRODUCT if params.metric == "ip" else faiss.METRIC_L2
    if params.index_type == "flat":
        return faiss.IndexFlat(dim, metric)
    if params.index_type == "ivf":
        quantizer = faiss.IndexFlat(dim, metric)
        index = faiss.IndexIVFFlat(quantizer, dim, params.nlist, metric)
        index.nprobe = params.nprobe
        return index  # faiss's Python wrapper keeps the quantizer alive with the index
    index = faiss.IndexHNSWFlat(dim, params.m, metric)
    index.hnsw.efConstruction = params.ef_construction
    index.hnsw.efSearch = params.ef_search
    return index


def set_search_params(
    faiss: ModuleType, index: Any, nprobe: Optional[int] = None, ef_search: Optional[int] = None
) -> None:
    """Sets an index's search knobs (those that apply to its type; None keeps the stored one)."""
    if nprobe is not None and isinstance(index, faiss.IndexIVF):
        index.nprobe = int(nprobe)
    if ef_search is not None and isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(ef_search)
