"""``OverlapFeature``: how much the terms of a query and a title overlap (one number per row)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import FeatureError
from recforge.features.combo_feature import split_values
from recforge.features.derived_feature import DerivedFeature

#: methods whose exact definition TorchEasyRec does not document (pairwise term distances)
_UNDOCUMENTED = ("proximity_min_dist", "proximity_max_dist", "proximity_avg_dist")


def _encode(query: pa.Array, title: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of the query and title terms (strings) over one shared dictionary."""
    terms = pa.concat_arrays([query, title])
    codes = pc.dictionary_encode(terms).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes[: len(query)], codes[len(query) :]


def _rows(lengths: np.ndarray) -> np.ndarray:
    """``int64 [N]``: the row of each flat term."""
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


def _per_row(codes: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    return [c.tolist() for c in np.split(codes, np.cumsum(lengths)[:-1])]


def _index_of(query: list[int], title: list[int]) -> int:
    """First term position of ``query`` as a contiguous run of ``title`` (-1: none)."""
    n = len(query)
    if n == 0:
        return -1
    for start in range(len(title) - n + 1):
        if title[start : start + n] == query:
            return start
    return -1


def _min_cover(query: list[int], title: list[int]) -> int:
    """Length of the shortest run of ``title`` holding every query term (0: one is missing)."""
    wanted = set(query)
    if not wanted or not wanted.issubset(title):
        return 0
    counts: dict[int, int] = {}
    have, best, left = 0, len(title), 0
    for right, term in enumerate(title):
        if term in wanted:
            counts[term] = counts.get(term, 0) + 1
            have += counts[term] == 1
        while have == len(wanted):
            best = min(best, right - left + 1)
            gone = title[left]
            if gone in wanted:
                counts[gone] -= 1
                have -= counts[gone] == 0
            left += 1
    return best


class OverlapFeature(DerivedFeature):
    r"""The overlap of ``query`` and ``title`` terms, a number per row (``method``).

    Both inputs hold terms: strings joined by ``separator`` (default ``"\x1d"``) or lists;
    null cells, null items and empty strings are no terms. Methods (TorchEasyRec's):

    * ``query_common_ratio``: query terms found in the title / query terms (0 when the query
      is empty).
    * ``title_common_ratio``: title terms found in the query / title terms.
    * ``is_equal``: 1 when both hold the same terms in the same order (and are not empty).
    * ``is_contain``: 1 when the query's terms appear in the title as one contiguous run, in
      order (TorchEasyRec says "contained, keeping the order"; we read it as the run that
      ``index_of`` finds).
    * ``index_of``: the term position where that run starts, -1 when there is none.
    * ``proximity_min_cover``: the length (in terms) of the shortest run of the title holding
      every query term; 0 when one is missing.

    ``proximity_min_dist`` / ``_max_dist`` / ``_avg_dist`` are refused: TorchEasyRec does not
    define how their pairwise distances are taken. The number then goes through
    ``normalizer`` and, with ``boundaries``, is bucketized into ``len(boundaries) + 1`` ids, as
    a :class:`~recforge.features.raw_feature.RawFeature` with ``value_dim`` 1.

    ``is_contain``, ``index_of`` and ``proximity_min_cover`` compare term sequences row by
    row in Python (a substring / window search per row); the ratios and ``is_equal`` are
    vectorised.
    """

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        self._require_inputs("query", "title")
        self._out = self._raw_output()
        method = self.config.method
        methods: dict[str, Callable[..., np.ndarray]] = {
            "query_common_ratio": self._query_ratio,
            "title_common_ratio": self._title_ratio,
            "is_equal": self._is_equal,
            "is_contain": self._is_contain,
            "index_of": self._index_of,
            "proximity_min_cover": self._min_cover,
        }
        if method in _UNDOCUMENTED:
            raise FeatureError(
                f"feature '{self.name}': method '{method}' is not supported (TorchEasyRec does "
                f"not define its pairwise distances); supported: {sorted(methods)}"
            )
        if not self.reads_fg_output and method not in methods:
            raise FeatureError(
                f"feature '{self.name}': method must be one of {sorted(methods)}, found '{method}'"
            )
        self._method = methods.get(method)

    @property
    def raw_inputs(self) -> list[str]:
        """``[query, title]`` (both must be set)."""
        cfg = self.config
        if cfg.query and cfg.title:
            return [cfg.query, cfg.title]
        return []

    def compute(self, columns: dict[str, pa.Array]) -> pa.Array:
        """One float per row (see the class docstring)."""
        query, title = self.input_columns(columns)
        q_terms, q_len = split_values(query, self.config.separator)
        t_terms, t_len = split_values(title, self.config.separator)
        q_rows, t_rows = _rows(q_len), _rows(t_len)
        q_codes, t_codes = _encode(q_terms, t_terms)
        assert self._method is not None
        out = self._method(q_codes, q_rows, q_len, t_codes, t_rows, t_len)
        return pa.array(np.asarray(out, dtype=np.float64))

    # ------------------------------------------------------------------ methods
    # each method takes (query codes, query rows, query lengths, title codes, title rows,
    # title lengths): flat term codes [N], the row of each term [N] and terms per row [B]
    @staticmethod
    def _ratio(
        codes: np.ndarray,
        rows: np.ndarray,
        lengths: np.ndarray,
        other: np.ndarray,
        other_rows: np.ndarray,
    ) -> np.ndarray:
        """Share of a row's terms that its other side holds too."""
        width = int(max(codes.max(initial=0), other.max(initial=0))) + 1
        found = np.isin(rows * width + codes, other_rows * width + other)
        common = np.bincount(rows, weights=found, minlength=len(lengths))
        return np.divide(common, lengths, out=np.zeros(len(lengths)), where=lengths > 0)

    def _query_ratio(self, *terms: np.ndarray) -> np.ndarray:
        q_codes, q_rows, q_len, t_codes, t_rows, _ = terms
        return self._ratio(q_codes, q_rows, q_len, t_codes, t_rows)

    def _title_ratio(self, *terms: np.ndarray) -> np.ndarray:
        q_codes, q_rows, _, t_codes, t_rows, t_len = terms
        return self._ratio(t_codes, t_rows, t_len, q_codes, q_rows)

    def _is_equal(self, *terms: np.ndarray) -> np.ndarray:
        q_codes, q_rows, q_len, t_codes, t_rows, t_len = terms
        same_len = (q_len == t_len) & (q_len > 0)
        q_keep, t_keep = same_len[q_rows], same_len[t_rows]
        differs = q_codes[q_keep] != t_codes[t_keep]  # aligned: same rows, same lengths
        mismatches = np.bincount(q_rows[q_keep], weights=differs, minlength=len(q_len))
        return (same_len & (mismatches == 0)).astype(np.float64)

    def _index_of(self, *terms: np.ndarray) -> np.ndarray:
        q_codes, _, q_len, t_codes, _, t_len = terms
        queries, titles = _per_row(q_codes, q_len), _per_row(t_codes, t_len)
        return np.array([_index_of(q, t) for q, t in zip(queries, titles)], dtype=np.float64)

    def _is_contain(self, *terms: np.ndarray) -> np.ndarray:
        return (self._index_of(*terms) >= 0).astype(np.float64)

    def _min_cover(self, *terms: np.ndarray) -> np.ndarray:
        q_codes, _, q_len, t_codes, _, t_len = terms
        queries, titles = _per_row(q_codes, q_len), _per_row(t_codes, t_len)
        return np.array([_min_cover(q, t) for q, t in zip(queries, titles)], dtype=np.float64)
