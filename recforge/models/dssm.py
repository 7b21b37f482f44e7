"""DSSM: two MLP towers, each with its own embedding tables."""

from __future__ import annotations

from typing import Any

from recforge.models.match_model import MatchModel


class DSSM(MatchModel):
    """Deep Structured Semantic Model (Huang et al. 2013) as a two-tower retriever.

    ``dssm { user_tower { input mlp } item_tower { input mlp } output_dim similarity
    temperature in_batch_negative }``: each tower embeds its feature group with its own tables
    and MLP; see :class:`~recforge.models.match_model.MatchModel` for candidates and loss.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init_towers(share_tables=False)
