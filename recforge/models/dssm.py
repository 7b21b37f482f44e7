"""DSSM: two MLP towers, each with its own embedding tables."""

from __future__ import annotations

from recforge.models.match_model import MatchModel


class DSSM(MatchModel):
    """Deep Structured Semantic Model (Huang et al. 2013) as a two-tower retriever.

    ``dssm { user_tower { input mlp } item_tower { input mlp } output_dim similarity
    temperature in_batch_negative }``: each tower embeds its feature group with its own tables
    and MLP; see :class:`~recforge.models.match_model.MatchModel` for candidates and loss.
    """

    def shares_tables(self) -> bool:
        """Each tower has its own tables."""
        return False
