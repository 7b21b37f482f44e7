"""DSSMV2: DSSM whose towers share embedding tables."""

from __future__ import annotations

from recforge.models.match_model import MatchModel


class DSSMV2(MatchModel):
    """DSSM with one embedding collection for both towers.

    A user feature and an item feature that name the same ``embedding_name`` (e.g. the item id
    of the user's last click and the candidate item id) look up one shared table; otherwise as
    :class:`~recforge.models.dssm.DSSM`.
    """

    def shares_tables(self) -> bool:
        """Both towers use one embedding collection."""
        return True
