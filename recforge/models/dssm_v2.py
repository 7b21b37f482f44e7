"""DSSMV2: DSSM whose towers share embedding tables."""

from __future__ import annotations

from typing import Any

from recforge.models.match_model import MatchModel


class DSSMV2(MatchModel):
    """DSSM with one embedding collection for both towers.

    A user feature and an item feature that name the same ``embedding_name`` (e.g. the item id
    of the user's last click and the candidate item id) look up one shared table; otherwise as
    :class:`~recforge.models.dssm.DSSM`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init_towers(share_tables=True)
