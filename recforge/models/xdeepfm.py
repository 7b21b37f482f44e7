"""xDeepFM: wide (first-order) + compressed interaction network + deep MLP."""

from __future__ import annotations

import torch

from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel
from recforge.modules.interaction import CIN
from recforge.modules.mlp import MLP


class xDeepFM(RankModel):  # noqa: N801 (the config message's name)
    """xDeepFM (Lian et al. 2018) over the feature groups ``wide`` (WIDE), ``deep`` and ``cin``.

    The CIN reads the ``cin`` group (features of one embedding dim; a DEEP group naming the
    deep features shares their tables), or the ``wide`` embeddings when there is no ``cin``
    group, as in TorchEasyRec. The logit is ``sum(wide) + head([cin, deep_mlp(deep)])``, with
    the ``final`` MLP (optional) before the head. Unlike DeepFM, the head keeps its default
    init: starting it at zero cost 0.001 Frappe test AUC (3 seeds).
    """

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        self.require_fields("cin", "deep")
        config = self._model_config
        group = self.init_embedding_group(config.wide_embedding_dim, config.wide_init_fn)
        self.require_groups("wide", "deep")
        self._wide_dim = config.wide_embedding_dim
        self._cin_group = "cin" if "cin" in group.group_names() else "wide"
        self._cin_dim = self.uniform_group_dim(self._cin_group)
        self.cin = self.layer_from_config(CIN, group.group_feature_count(self._cin_group), "cin")
        self.deep = self.layer_from_config(MLP, group.group_total_dim("deep"), "deep")
        width = self.cin.output_dim() + self.deep.output_dim()
        self.init_final_and_head(width)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        grouped = self.build_input(batch)
        wide = grouped["wide"].sum(dim=1, keepdim=True)
        cin_input = grouped[self._cin_group]
        cin = self.cin(cin_input.view(cin_input.shape[0], -1, self._cin_dim))
        hidden = torch.cat([cin, self.deep(grouped["deep"])], dim=1)
        return self._output_to_prediction(self.final_and_head(hidden) + wide)
