"""Multi-gate Mixture-of-Experts (Ma et al. 2018), the shared layer of MMoE and DBMTL."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from recforge.modules.mlp import MLP
from recforge.protos import module_pb2


class MMoE(nn.Module):
    """``num_expert`` expert MLPs shared by ``num_task`` tasks, mixed per task by a gate.

    Each task's gate is ``softmax(linear(gate_mlp(x)))`` over the experts (``gate_mlp`` is
    optional); the task's output is the gate-weighted sum of the expert outputs.

    Args:
        in_features: input width ``D_in``.
        expert_mlp: the experts' ``MLP`` config (every expert has this shape).
        num_expert: number of experts ``E``.
        num_task: number of tasks ``T``.
        gate_mlp: optional ``MLP`` config in front of each gate's linear layer.

    Shapes:
        input ``[B, D_in]`` -> a list of ``T`` tensors ``[B, D_e]`` (``D_e``: the experts'
        last hidden width, :meth:`output_dim`).

    Example:
        >>> cfg = module_pb2.MLP(hidden_units=[8])
        >>> mmoe = MMoE(4, cfg, num_expert=3, num_task=2)
        >>> [t.shape for t in mmoe(torch.randn(5, 4))]
        [torch.Size([5, 8]), torch.Size([5, 8])]

    """

    def __init__(
        self,
        in_features: int,
        expert_mlp: module_pb2.MLP,
        num_expert: int,
        num_task: int,
        gate_mlp: Optional[module_pb2.MLP] = None,
    ) -> None:
        super().__init__()
        if num_expert < 1 or num_task < 1:
            raise ValueError(
                f"MMoE needs num_expert >= 1 and num_task >= 1 ({num_expert}, {num_task})"
            )
        self.experts = nn.ModuleList(
            [MLP.from_config(in_features, expert_mlp) for _ in range(num_expert)]
        )
        self.gates = nn.ModuleList()
        for _ in range(num_task):
            if gate_mlp is not None and gate_mlp.hidden_units:
                hidden = MLP.from_config(in_features, gate_mlp)
                gate = nn.Sequential(hidden, nn.Linear(hidden.output_dim(), num_expert))
            else:
                gate = nn.Sequential(nn.Linear(in_features, num_expert))
            self.gates.append(gate)
        self._output_dim = self.experts[0].output_dim()  # type: ignore[operator]

    def output_dim(self) -> int:
        """Width of each task's output."""
        return self._output_dim

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Mixes the experts for each task: ``[B, D_in]`` -> ``T x [B, D_e]``."""
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, E, D_e]
        outputs = []
        for gate in self.gates:
            weights = torch.softmax(gate(x), dim=1).unsqueeze(1)  # [B, 1, E]
            outputs.append(torch.bmm(weights, experts).squeeze(1))
        return outputs
