"""The error of item indexes: a bad ``build-index`` request or an index that does not fit."""

from __future__ import annotations

from recforge.errors import RecforgeError

EXTRA_HINT = "needs the faiss extra: pip install recforge[faiss]"


class RetrievalIndexError(RecforgeError):
    """An item index request or file is invalid, or the index belongs to another export."""
